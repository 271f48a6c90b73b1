"""Finding a model directory: a local path, the name of a model shipped inside minialign
(``align-nano``), or a hub id such as ``kakaobrain/align-base``.

minialign never needs the network. A name is looked up, in order:
0. as a local directory, then among the models shipped in ``minialign/models/`` (by folder name);
1. in the local Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``), where ``huggingface_hub`` and transformers keep downloads as
   ``models--{org}--{name}/snapshots/{commit}/`` with ``refs/main`` naming the commit;
2. by ``huggingface_hub.snapshot_download``, if that package is installed and
   ``HF_HUB_OFFLINE`` is not set;
otherwise the error says how to get the files.
"""

from __future__ import annotations

import os

from .checkpoint import CheckpointError

# The models shipped inside the package, one folder each, found by name: from_pretrained("align-nano").
EMBEDDED_MODELS_DIR = os.path.join(os.path.dirname(__file__), "models")
DEFAULT_MODEL = "align-nano"  # what the pipeline and the command line use when given no model

# The files minialign reads from a hub-layout directory.
MODEL_FILES = ("config.json", "*.safetensors", "model.safetensors.index.json", "vocab.txt", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json", "processor_config.json")


def hf_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def cached_snapshot(repo_id: str, revision: str = "main") -> str | None:
    """The cached snapshot directory of ``repo_id`` at ``revision`` (a branch or commit), if any."""
    repo_dir = os.path.join(hf_cache_dir(), "models--" + repo_id.replace("/", "--"))
    ref_file = os.path.join(repo_dir, "refs", revision)
    commit = revision
    if os.path.isfile(ref_file):
        with open(ref_file, encoding="utf-8") as fh:
            commit = fh.read().strip()
    snapshot = os.path.join(repo_dir, "snapshots", commit)
    return snapshot if os.path.isfile(os.path.join(snapshot, "config.json")) else None


def embedded_models() -> list[str]:
    """The names of the models shipped inside this installation (folders with a config.json)."""
    if not os.path.isdir(EMBEDDED_MODELS_DIR):
        return []
    return sorted(name for name in os.listdir(EMBEDDED_MODELS_DIR)
                  if os.path.isfile(os.path.join(EMBEDDED_MODELS_DIR, name, "config.json")))


def looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_model_dir(path_or_id: str | os.PathLike) -> str:
    """A local directory holding the model files, for a path or a hub id."""
    path = os.fspath(path_or_id)
    if os.path.isdir(path):
        return path
    if path in embedded_models():
        return os.path.join(EMBEDDED_MODELS_DIR, path)
    if not looks_like_hub_id(path):
        shipped = ", ".join(embedded_models()) or "none in this installation"
        raise CheckpointError(f"model directory not found: {path} (the models shipped with minialign: {shipped})")
    snapshot = cached_snapshot(path)
    if snapshot:
        return snapshot
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        snapshot_download = None
    if snapshot_download is not None and not offline:
        try:
            return snapshot_download(path, allow_patterns=list(MODEL_FILES))
        except Exception as err:  # network, auth, missing repo: all end in the same advice
            reason = f" (download failed: {err})"
    else:
        reason = " (HF_HUB_OFFLINE is set)" if offline else " (huggingface_hub is not installed)"
    raise CheckpointError(
        f"{path!r} is neither a local directory nor in the Hugging Face cache at {hf_cache_dir()}{reason}. "
        f"Download it once, e.g. `hf download {path}` (huggingface_hub's command) or "
        f"`git clone https://huggingface.co/{path}`, and pass the directory."
    )
