"""Retrieval with ALIGN embeddings: index a folder of images, search it, measure recall@k.

    folder ──► embed_folder ──► index.safetensors ──► load_index ──► search, search_text, search_image
    (image, caption) pairs ──► evaluate_retrieval ──► retrieval_metrics ──► recall@1/5/10 both ways

Every embedding here is L2-normalised, so a dot product is a cosine similarity in [-1, 1].

The index file
--------------
A safetensors file with one tensor and string metadata (safetensors allows only str -> str):

    embeddings   float32 [N, D], rows L2-normalised, rows ordered by path
    __metadata__ format   "minialign-retrieval-index"
                 version  "1"
                 model_id the model that made the embeddings (see embed_folder)
                 dim      str(D)
                 count    str(N)
                 paths    JSON list of N paths relative to the folder, "/"-separated, sorted

Rows are kept sorted by path (Python string order), so an index built in several resumed runs is
the same file as one built in a single run. The paths live in the JSON header, which safetensors
caps at 100 MB: about a million paths of ordinary length.

Decisions in ``embed_folder``
-----------------------------
- Files: the folder is walked recursively (symlinked folders are not entered, symlinked files
  are read); a file is an image when its extension, in any case, is in ``IMAGE_EXTENSIONS``.
  Other files are ignored silently; image-named files that cannot be read (truncated, not an
  image at all, no permission) are reported in ``EmbedReport.failed`` with the reason and
  skipped -- never fatal. A model output that is zero or not finite is reported the same way.
- Batches are ``batch_size`` *files*; a failed file makes its batch smaller.
- Resuming: if ``index_path`` exists it must be a valid index made with the same ``model_id``
  (else an error; the file is never overwritten then). Paths already in it are skipped, so only
  new files are embedded. Files that failed before are tried again. A file whose content changed
  keeps its old embedding (paths are the key); entries whose file is gone are kept and counted in
  ``EmbedReport.stale``. Delete the index to rebuild from scratch.
- Saving: the whole index is rewritten every ``checkpoint_every`` batches, at the end, and when the
  run is interrupted (Ctrl-C or any exception, before re-raising). Each write goes to a temporary
  file next to the index and is then moved over it with ``os.replace``, so a crash mid-write
  leaves the previous index intact.
- ``model_id=None`` stores ``model_fingerprint(model)``: a SHA-256 of the config and every weight,
  so that resuming with other weights is caught even without a name. Hashing reads every weight
  once (about a second for align-base).
- Progress: a tqdm bar on stderr when tqdm is importable (it is not a dependency), else a line on
  stderr every few batches. Nothing is ever written to stdout.

Decisions in ``search``
-----------------------
The query is L2-normalised, scores are ``embeddings @ query`` (cosine similarity). Results are
ordered by score, ties by index row (= by path); ``k`` larger than the index returns every row,
``k < 1`` and an empty index are errors.

Metrics: CLIP_benchmark's definitions
-------------------------------------
As ``clip_benchmark/metrics/zeroshot_retrieval.py`` (LAION-AI/CLIP_benchmark) computes them, with
T captions, I images and ``text_to_image[t]`` the image of caption t (an image may have several):

    scores = normalise(text_embeds) @ normalise(image_embeds)^T                 [T, I]
    image_retrieval_recall@k = mean over captions t of [ text_to_image[t] is among the top k of scores[t, :] ]
    text_retrieval_recall@k  = mean over images i of   [ ANY caption of i is among the top k of scores[:, i] ]

("image retrieval" = a caption is the query and images are retrieved; "text retrieval" the
reverse.) Two points CLIP_benchmark leaves to ``torch.topk`` are fixed here:

- Ties: candidates with equal scores are ordered by index, lower first (a stable sort on
  descending score). ``torch.topk`` leaves the order of ties unspecified, so on exactly tied
  scores the two can differ; on real embeddings exact ties practically never occur.
- k larger than the number of candidates: ``torch.topk`` raises; here every candidate is
  retrieved, so recall@k is 1.0.

An image with no caption is an error here (CLIP_benchmark would count it as a miss). In
``evaluate_retrieval`` pairs naming the same image file (same absolute path) are one image with
several captions; non-path images (PIL images, arrays) are one image per distinct object.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .checkpoint import CheckpointError, read_safetensors
from .image_processing import ImageInputError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
INDEX_FORMAT = "minialign-retrieval-index"
INDEX_VERSION = "1"
_METADATA_KEYS = ("format", "version", "model_id", "dim", "count", "paths")


# -- the index file ----------------------------------------------------------------------------


@dataclass
class Index:
    embeddings: np.ndarray  # [N, D] float32, rows L2-normalised
    paths: list[str]  # N paths relative to the embedded folder, "/"-separated
    model_id: str

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.paths):
            raise ValueError(
                f"Index: embeddings must be [N, D] with N = len(paths) = {len(self.paths)}, found "
                f"shape {self.embeddings.shape}"
            )

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]


def save_index(index: Index, path: str | os.PathLike) -> None:
    """Write ``index`` to ``path`` atomically: a temporary file next to it, then ``os.replace``."""
    from safetensors.numpy import save_file

    path = os.fspath(path)
    if len(set(index.paths)) != len(index.paths):
        raise ValueError("Index: paths must be unique")
    metadata = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "model_id": index.model_id,
        "dim": str(index.dim),
        "count": str(len(index)),
        "paths": json.dumps(index.paths),  # ASCII-escaped: undecodable file names survive too
    }
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file({"embeddings": np.ascontiguousarray(index.embeddings, dtype=np.float32)}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # only when writing or renaming failed
            os.remove(tmp)


def _read_metadata(path: str) -> dict[str, Any] | None:
    """The ``__metadata__`` of a safetensors file whose header read_safetensors already checked."""
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(header_len)).get("__metadata__")


def load_index(path: str | os.PathLike) -> Index:
    """Read an index written by ``embed_folder`` / ``save_index``. Embeddings are memory-mapped.

    Raises ``CheckpointError`` naming the file and the problem: missing, truncated, not
    safetensors, not an index, or metadata that disagrees with the embeddings.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"index file not found: {path}")
    tensors = read_safetensors(path)  # CheckpointError on truncated or garbage files

    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a valid minialign retrieval index: {problem}")

    metadata = _read_metadata(path)
    if not metadata:
        raise bad("no __metadata__ in the safetensors header")
    if missing := [key for key in _METADATA_KEYS if key not in metadata]:
        raise bad(f"the metadata lacks {missing} (has {sorted(metadata)})")
    if metadata["format"] != INDEX_FORMAT:
        raise bad(f"format is {metadata['format']!r}, expected {INDEX_FORMAT!r}")
    if metadata["version"] != INDEX_VERSION:
        raise bad(f"format version {metadata['version']!r}; this minialign reads version {INDEX_VERSION}")
    if sorted(tensors) != ["embeddings"]:
        raise bad(f"expected exactly one tensor 'embeddings', found {sorted(tensors)}")
    embeddings = tensors["embeddings"]
    if embeddings.dtype != np.float32 or embeddings.ndim != 2:
        raise bad(f"'embeddings' must be float32 [N, D], found {embeddings.dtype} {list(embeddings.shape)}")
    try:
        paths = json.loads(metadata["paths"])
    except json.JSONDecodeError as err:
        raise bad(f"the 'paths' metadata is not JSON ({err})") from None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise bad("the 'paths' metadata is not a JSON list of strings")
    expected = (metadata["count"], metadata["dim"])
    if expected != (str(len(paths)), str(embeddings.shape[1])) or len(paths) != embeddings.shape[0]:
        raise bad(
            f"count={metadata['count']}, dim={metadata['dim']} and {len(paths)} paths disagree with "
            f"embeddings of shape {list(embeddings.shape)}"
        )
    if len(set(paths)) != len(paths):
        raise bad("the same path is listed twice")
    return Index(embeddings=embeddings, paths=paths, model_id=metadata["model_id"])


# -- embedding ---------------------------------------------------------------------------------


def _normalize_rows(x: np.ndarray, what: str) -> np.ndarray:  # [N, D] -> [N, D] float32
    """x / ||x|| per row; a zero or non-finite row is an error."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if not (np.isfinite(norms).all() and (norms > 0).all()):
        raise ValueError(f"{what}: cannot normalise a zero or non-finite embedding")
    return x / norms


def model_fingerprint(model) -> str:
    """``"sha256:<hex>"`` of the model's config and every weight (names, shapes and bytes)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name in sorted(model.params):
        array = np.ascontiguousarray(model.params[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return "sha256:" + digest.hexdigest()


def embed_texts(model, processor, texts: Sequence[str], *, batch_size: int = 16) -> np.ndarray:
    # N strings -> [N, D] float32, L2-normalised
    """``model.get_text_features`` of each text (tokenized by ``processor``), normalised."""
    if isinstance(texts, str):
        raise TypeError("embed_texts takes a list of strings; wrap a single text in a list")
    out = []
    for start in range(0, len(texts), batch_size):
        batch = processor(text=list(texts[start:start + batch_size]))
        features = model.get_text_features(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        out.append(_normalize_rows(features, f"texts[{start}:{start + batch_size}]"))
    return np.concatenate(out) if out else np.zeros((0, model.config.projection_dim), np.float32)


def embed_images(model, processor, images: Sequence[Any], *, batch_size: int = 16) -> np.ndarray:
    # N images (paths, PIL images, arrays) -> [N, D] float32, L2-normalised
    """``model.get_image_features`` of each image (prepared by ``processor``), normalised.

    An unreadable image raises (``ImageInputError`` naming it); ``embed_folder`` instead skips it.
    """
    out = []
    for start in range(0, len(images), batch_size):
        pixel_values = processor(images=list(images[start:start + batch_size]))["pixel_values"]
        out.append(_normalize_rows(model.get_image_features(pixel_values), f"images[{start}:{start + batch_size}]"))
    return np.concatenate(out) if out else np.zeros((0, model.config.projection_dim), np.float32)


def list_images(folder: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Every file under ``folder`` with an image extension, as sorted "/"-separated relative paths."""
    extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    found = []
    for directory, _, files in os.walk(folder):
        for name in files:
            if name.lower().endswith(extensions):
                relative = os.path.relpath(os.path.join(directory, name), folder)
                found.append(relative.replace(os.sep, "/"))
    return sorted(found)


@dataclass
class EmbedReport:
    index_path: str
    embedded: int  # images embedded in this run
    already_indexed: int  # images in the folder that the index already held (skipped)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason), skipped
    stale: int = 0  # index entries whose file is no longer in the folder (kept)
    total: int = 0  # rows in the index after this run

    def summary(self) -> str:
        lines = [
            f"{self.index_path}: {self.total} images indexed ({self.embedded} embedded now, "
            f"{self.already_indexed} already indexed, {len(self.failed)} failed"
            + (f", {self.stale} no longer in the folder)" if self.stale else ")")
        ]
        lines += [f"  failed: {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


class _Silent:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _StderrProgress(_Silent):
    """The fallback when tqdm is not installed: "embedding: 32/100" on stderr every 10 updates."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.done, self.calls = total, desc, 0, 0

    def update(self, n: int) -> None:
        self.done, self.calls = self.done + n, self.calls + 1
        if self.calls % 10 == 0 or self.done >= self.total:
            print(f"{self.desc}: {self.done}/{self.total}", file=sys.stderr, flush=True)


def _progress(total: int, desc: str, enabled: bool):
    """Something with ``update(n)`` and ``close()``: tqdm's bar on stderr when importable."""
    if not enabled:
        return _Silent()
    try:
        from tqdm import tqdm
    except ImportError:
        return _StderrProgress(total, desc)
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr)


def embed_folder(
    model,
    processor,
    folder: str | os.PathLike,
    index_path: str | os.PathLike,
    *,
    batch_size: int = 16,
    model_id: str | None = None,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    progress: bool = True,
    checkpoint_every: int = 20,
) -> EmbedReport:
    """Embed every image under ``folder`` into the index file ``index_path``; resumable.

    model: an ``AlignModel`` (anything with ``get_image_features`` and ``config.projection_dim``).
    processor: an ``AlignProcessor``; its image processor prepares each file.
    model_id: recorded in the index and checked on resume; None records ``model_fingerprint(model)``.
    checkpoint_every: rewrite the index after this many batches (it is also written at the end).
    See the module docstring for what is skipped, retried and kept.
    """
    if batch_size < 1 or checkpoint_every < 1:
        raise ValueError(f"batch_size and checkpoint_every must be >= 1, got {batch_size} and {checkpoint_every}")
    folder, index_path = os.fspath(folder), os.fspath(index_path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    if model_id is None:
        model_id = model_fingerprint(model)
    dim = model.config.projection_dim

    # What the index already holds, as a dict {path: [D] embedding}.
    rows: dict[str, np.ndarray] = {}
    if os.path.exists(index_path):
        previous = load_index(index_path)
        if previous.model_id != model_id:
            raise ValueError(
                f"{index_path} holds embeddings from model {previous.model_id!r}, not {model_id!r}; "
                "embeddings of different models cannot share an index (delete it or choose another index path)"
            )
        if previous.dim != dim:
            raise ValueError(f"{index_path} holds {previous.dim}-d embeddings but the model gives {dim}-d ones")
        rows = dict(zip(previous.paths, np.array(previous.embeddings)))  # a copy: the file gets replaced
        del previous

    images = list_images(folder, extensions)
    todo = [path for path in images if path not in rows]
    report = EmbedReport(index_path=index_path, embedded=0, already_indexed=len(images) - len(todo),
                         stale=len(rows.keys() - set(images)))

    def save() -> None:
        paths = sorted(rows)
        embeddings = np.stack([rows[p] for p in paths]) if paths else np.zeros((0, dim), np.float32)
        save_index(Index(embeddings, paths, model_id), index_path)

    bar = _progress(len(todo), "embedding", progress)
    unsaved = 0  # batches embedded since the last write
    try:
        for start in range(0, len(todo), batch_size):
            loaded, pixels = [], []
            for path in todo[start:start + batch_size]:
                try:
                    pixels.append(processor(images=os.path.join(folder, path))["pixel_values"])  # [1, 3, H, W]
                    loaded.append(path)
                except (ImageInputError, OSError, Image.DecompressionBombError) as err:
                    report.failed.append((path, str(err)))
            if loaded:
                features = np.asarray(model.get_image_features(np.concatenate(pixels)), np.float32)  # [B, D]
                norms = np.linalg.norm(features, axis=1)
                for path, feature, norm in zip(loaded, features, norms):
                    if np.isfinite(norm) and norm > 0:
                        rows[path] = feature / norm
                        report.embedded += 1
                    else:
                        report.failed.append((path, f"the model gave a zero or non-finite embedding (norm {norm})"))
                unsaved += 1
            bar.update(len(todo[start:start + batch_size]))
            if unsaved >= checkpoint_every:
                save()
                unsaved = 0
    except BaseException:
        if unsaved:
            save()  # keep the finished batches for the next run
        raise
    finally:
        bar.close()
    if unsaved or not os.path.exists(index_path):
        save()
    report.total = len(rows)
    return report


# -- search ------------------------------------------------------------------------------------


def search(index: Index, query_embedding: np.ndarray, k: int = 5) -> list[dict[str, Any]]:
    # [D] or [1, D] -> k x {"path", "score"}, best first
    """The ``k`` indexed images most similar (cosine) to the query; ties go to the earlier path."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(index) == 0:
        raise ValueError("the index is empty: there is nothing to search (were any images embedded?)")
    query = np.asarray(query_embedding, dtype=np.float32)
    if query.ndim == 2 and query.shape[0] == 1:
        query = query[0]
    if query.shape != (index.dim,):
        raise ValueError(f"query embedding must have shape [{index.dim}] (the index's dimension), found {query.shape}")
    query = _normalize_rows(query[None], "query")[0]
    scores = index.embeddings @ query  # [N]
    order = np.argsort(-scores, kind="stable")[:k]
    return [{"path": index.paths[i], "score": float(scores[i])} for i in order]


def search_text(model, processor, index: Index, text: str, k: int = 5) -> list[dict[str, Any]]:
    """Search ``index`` with a caption, embedded by ``model``'s text tower."""
    return search(index, embed_texts(model, processor, [text])[0], k)


def search_image(model, processor, index: Index, image: Any, k: int = 5) -> list[dict[str, Any]]:
    """Search ``index`` with an image (path, PIL image or array), embedded by ``model``'s image tower."""
    return search(index, embed_images(model, processor, [image])[0], k)


# -- evaluation --------------------------------------------------------------------------------


def _best_positive_rank(scores: np.ndarray, positives: np.ndarray, block: int = 1024) -> np.ndarray:
    # [Q, N] float, [Q, N] bool (>= 1 True per row) -> [Q] int
    """Per query row, the 0-based rank of its best-ranked positive when candidates are ordered by
    score descending, ties by lower index.

    A candidate is retrieved in the top k exactly when its rank is < k; some positive is in the top
    k exactly when the best-ranked one is. That positive is the one with the highest score (lowest
    index among equals), and its rank counts the candidates ordered before it:
        rank = #{j : s_j > s_p} + #{j : s_j == s_p and j < p}.
    Computed ``block`` rows at a time to bound the [block, N] temporaries.
    """
    ranks = []
    columns = np.arange(scores.shape[1])  # [N]
    for start in range(0, scores.shape[0], block):
        s, pos = scores[start:start + block], positives[start:start + block]  # [b, N]
        best_score = np.where(pos, s, -np.inf).max(axis=1, keepdims=True)  # [b, 1]
        best_index = np.argmax(pos & (s == best_score), axis=1)[:, None]  # [b, 1]: first such column
        before = (s > best_score) | ((s == best_score) & (columns < best_index))  # [b, N]
        ranks.append(before.sum(axis=1))
    return np.concatenate(ranks) if ranks else np.zeros(0, np.int64)


def retrieval_metrics_from_scores(scores: np.ndarray, text_to_image: Sequence[int],
                                  ks: Iterable[int] = (1, 5, 10)) -> dict[str, float]:
    # [T, I] scores, T image indices -> {"image_retrieval_recall@k", "text_retrieval_recall@k"}
    """CLIP_benchmark's recall@k from a caption-by-image score matrix (see the module docstring)."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"scores must be a non-empty [T, I] matrix, found shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    n_texts, n_images = scores.shape
    text_to_image = np.asarray(text_to_image)
    if text_to_image.shape != (n_texts,) or not np.issubdtype(text_to_image.dtype, np.integer):
        raise ValueError(f"text_to_image must be {n_texts} integers (one image index per caption), found "
                         f"{text_to_image.dtype} {text_to_image.shape}")
    if text_to_image.min() < 0 or text_to_image.max() >= n_images:
        raise ValueError(f"text_to_image holds indices outside 0..{n_images - 1}")
    if (uncaptioned := np.setdiff1d(np.arange(n_images), text_to_image)).size:
        raise ValueError(f"images {uncaptioned[:10].tolist()} have no caption in text_to_image")
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")

    positives = np.zeros((n_texts, n_images), dtype=bool)  # positives[t, i]: caption t describes image i
    positives[np.arange(n_texts), text_to_image] = True
    text_ranks = _best_positive_rank(scores, positives)  # [T]: rank of each caption's image
    image_ranks = _best_positive_rank(scores.T, positives.T)  # [I]: rank of each image's best caption
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = float(np.mean(text_ranks < k))
        metrics[f"text_retrieval_recall@{k}"] = float(np.mean(image_ranks < k))
    return metrics


def retrieval_metrics(image_embeds: np.ndarray, text_embeds: np.ndarray, text_to_image: Sequence[int],
                      ks: Iterable[int] = (1, 5, 10)) -> dict[str, float]:
    # [I, D], [T, D], T image indices -> {"image_retrieval_recall@k", "text_retrieval_recall@k"}
    """Recall@k both ways, CLIP_benchmark's definitions; embeddings are L2-normalised here first.

    ``text_to_image[t]`` is the row of ``image_embeds`` that caption ``t`` describes.
    """
    images = _normalize_rows(image_embeds, "image_embeds")
    texts = _normalize_rows(text_embeds, "text_embeds")
    if images.ndim != 2 or texts.ndim != 2 or images.shape[1] != texts.shape[1]:
        raise ValueError(f"image_embeds [I, D] and text_embeds [T, D] must share D, found {images.shape} and "
                         f"{texts.shape}")
    return retrieval_metrics_from_scores(texts @ images.T, text_to_image, ks)  # [T, I]


def evaluate_retrieval(model, processor, pairs: Sequence[tuple[Any, str]], *, batch_size: int = 16,
                       ks: Iterable[int] = (1, 5, 10)) -> dict[str, float]:
    """Embed ``(image, caption)`` pairs with ``model`` and return ``retrieval_metrics`` on them.

    Pairs naming the same image file are one image with several captions (compared by absolute
    path); PIL images and arrays count once per distinct object. An unreadable image is an error.
    """
    if len(pairs) == 0:
        raise ValueError("evaluate_retrieval needs at least one (image, caption) pair")
    images: list[Any] = []
    image_number: dict[Any, int] = {}
    text_to_image = []
    for image, _ in pairs:
        key = os.path.abspath(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else id(image)
        if key not in image_number:
            image_number[key] = len(images)
            images.append(image)
        text_to_image.append(image_number[key])
    image_embeds = embed_images(model, processor, images, batch_size=batch_size)  # [I, D]
    text_embeds = embed_texts(model, processor, [caption for _, caption in pairs], batch_size=batch_size)  # [T, D]
    return retrieval_metrics(image_embeds, text_embeds, text_to_image, ks)
