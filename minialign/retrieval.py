"""Retrieval with ALIGN embeddings: index a folder of images, search it, measure recall@k.

    folder ──► embed_folder ──► index.safetensors ──► load_index ──► search, search_text, search_image
    (image, caption) pairs ──► evaluate_retrieval ──► retrieval_metrics ──► recall@1/5/10 both ways

Every embedding here is L2-normalised, so a dot product is a cosine similarity in [-1, 1].

The index file
--------------
A safetensors file with one tensor and string metadata (safetensors allows only str -> str):

    embeddings   float32 [N, D], rows L2-normalised, rows ordered by path
    __metadata__ format       "minialign-retrieval-index"
                 version      "2"
                 model_id     the model's name as the user gave it (see embed_folder)
                 model_sha256 model_fingerprint(model): "sha256:<64 hex>" of its config and weights,
                              or "" when unknown (an Index saved without one)
                 dim          str(D)
                 count        str(N)
                 paths        JSON list of N paths relative to the folder, "/"-separated, sorted

Version "1" files (no model_sha256) are still read: their hash is unknown, except when their
model_id is itself a fingerprint (``embed_folder`` with ``model_id=None`` stored one there).

Rows are kept sorted by path (Python string order), so an index built in several resumed runs is
the same file as one built in a single run. The paths live in the JSON header, which safetensors
caps at 100 MB: about a million paths of ordinary length.

Decisions in ``embed_folder``
-----------------------------
- Checked before any work (``check_embed_paths``, which the command line runs before loading the
  model): the folder exists and can be listed; the index path is not a folder, its folder exists
  and a file can be created there; the folder holds at least one image file. A folder without
  images is an error even when the index already exists: a run could do nothing, and the likely
  cause is a wrong path (a typo, an unmounted disk) that a "0 images indexed" would hide.
- Files: the folder is walked recursively (symlinked folders are not entered, so a symlink loop
  is never followed; symlinked files are read); a file is an image when its extension, in any
  case, is in ``IMAGE_EXTENSIONS``. Other files are ignored silently. Reported in
  ``EmbedReport.failed`` with the reason and skipped, never fatal: image-named files that cannot be
  read (truncated, not an image at all, no permission, a broken or looping symlink, a FIFO or
  device), sub-folders that cannot be listed (``"sub/"``), and model outputs that are zero or
  not finite.
- Batches are ``batch_size`` *files*; a failed file makes its batch smaller.
- Resuming: if ``index_path`` exists it must be a valid index made by the same model, else an
  error and the file is never overwritten. "The same model" is the same ``model_fingerprint``
  when the index records one (whatever name it was given); for an index without one (version
  "1") the same ``model_id``, and the fingerprint is recorded from then on. Paths already in it
  are skipped, so only new files are embedded. Files that failed before are tried again. A file
  whose content changed keeps its old embedding (paths are the key); entries whose file is gone
  are kept and counted in ``EmbedReport.stale``. Delete the index to rebuild from scratch.
- Saving: the whole index is rewritten every ``checkpoint_every`` batches, at the end, and when the
  run is interrupted (Ctrl-C or any exception, before re-raising). The exception then carries the
  ``EmbedReport`` as ``embed_report`` (``total``: the rows the file holds); a bare
  ``KeyboardInterrupt`` also gets ``report.saved()`` as its message: "N images saved to INDEX;
  run the same command again to resume".
  Each write goes to a temporary file next to the index and is then moved over it with
  ``os.replace``, so a crash mid-write leaves the previous index intact.
- The model's fingerprint (a SHA-256 of the config and every weight) is always recorded, so that
  resuming or searching with other weights is caught whatever the names; ``model_id=None``
  records it as the name too. Hashing reads every weight once (about half a second for
  align-base).
- Progress: a tqdm bar on stderr (``minialign.progress``), shown only when stderr is a terminal
  and ``progress`` is true. Nothing is ever written to stdout.

Decisions in ``search``
-----------------------
The query is L2-normalised, scores are ``embeddings @ query`` (cosine similarity). Results are
ordered by score, ties by index row (= by path); ``k`` larger than the index returns every row,
``k < 1``, an empty index and an empty or blank text query are errors.

``search_text`` and ``search_image`` first run ``check_index_model``: scores between embeddings
of two different models mean nothing, so an index made by another model (another fingerprint) is
an error naming both, unless ``force=True``. An index that does not record its fingerprint
(version "1") is compared by ``model_id`` when the caller gives one, else searched with a note.

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
import re
import struct
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .checkpoint import CheckpointError, read_safetensors
from .image_processing import ImageInputError
from .progress import progress as progress_bar

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
INDEX_FORMAT = "minialign-retrieval-index"
INDEX_VERSION = "2"  # "2" added model_sha256
_METADATA_KEYS = {  # version -> the keys it must have
    "1": ("format", "version", "model_id", "dim", "count", "paths"),
    "2": ("format", "version", "model_id", "model_sha256", "dim", "count", "paths"),
}
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")


# -- the index file ----------------------------------------------------------------------------


@dataclass
class Index:
    embeddings: np.ndarray  # [N, D] float32, rows L2-normalised
    paths: list[str]  # N paths relative to the embedded folder, "/"-separated
    model_id: str  # the model's name as given (a hub id, a directory), or its fingerprint
    model_sha256: str | None = None  # model_fingerprint of the model; None: unknown
    file: str | None = field(default=None, compare=False)  # where load_index read it, for messages

    def __post_init__(self) -> None:
        if self.model_sha256 is not None and not _FINGERPRINT.fullmatch(self.model_sha256):
            raise ValueError(f"Index: model_sha256 must be 'sha256:' and 64 hex digits or None, got "
                             f"{self.model_sha256!r}")
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
        "model_sha256": index.model_sha256 or "",
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
    if missing := [key for key in ("format", "version") if key not in metadata]:
        raise bad(f"the metadata lacks {missing} (has {sorted(metadata)})")
    if metadata["format"] != INDEX_FORMAT:
        raise bad(f"format is {metadata['format']!r}, expected {INDEX_FORMAT!r}")
    version = metadata["version"]
    if version not in _METADATA_KEYS:
        raise bad(f"format version {version!r}; this minialign reads versions {', '.join(_METADATA_KEYS)}")
    if missing := [key for key in _METADATA_KEYS[version] if key not in metadata]:
        raise bad(f"the metadata lacks {missing} (has {sorted(metadata)})")
    if version == "1":  # before model_sha256: known only when the fingerprint was stored as the model_id
        model_sha256 = metadata["model_id"] if _FINGERPRINT.fullmatch(metadata["model_id"]) else None
    else:
        model_sha256 = metadata["model_sha256"] or None
        if model_sha256 is not None and not _FINGERPRINT.fullmatch(model_sha256):
            raise bad(f"model_sha256 is {model_sha256!r}, not 'sha256:' and 64 hex digits")
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
    return Index(embeddings=embeddings, paths=paths, model_id=metadata["model_id"], model_sha256=model_sha256,
                 file=path)


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


def _describe_model(model_id: str | None, model_sha256: str | None) -> str:
    """"model 'kakaobrain/align-base' (sha256:0123456789ab)", for messages: the name and a short hash."""
    short = model_sha256[:len("sha256:") + 12] if model_sha256 else None
    if model_id is None or model_id == model_sha256:
        return f"model {short}" if short else "an unnamed model"
    return f"model {model_id!r} ({short or 'weights hash not recorded'})"


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


def _extension_tuple(extensions: Iterable[str]) -> tuple[str, ...]:
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def _walk_images(folder: str, extensions: tuple[str, ...], problems: list[tuple[str, str]]) -> Iterable[str]:
    """Yield the "/"-separated relative path of every image file under ``folder``, in no set order.

    Symlinked folders are not entered (so a symlink loop ends at once). An image-named entry that
    is not a readable regular file, and a sub-folder that cannot be listed, are appended to
    ``problems`` as (relative path, reason); a folder's path ends with "/".
    """
    pending = [""]  # relative folders still to list; "" is the folder itself
    while pending:
        relative_dir = pending.pop()
        try:
            with os.scandir(os.path.join(folder, relative_dir) if relative_dir else folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            problems.append((relative_dir + "/", f"cannot list the folder ({err.strerror or err}); "
                                                 "images in it are not indexed"))
            continue
        for entry in entries:
            relative = f"{relative_dir}/{entry.name}" if relative_dir else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(relative)
                elif not entry.name.lower().endswith(extensions) or entry.is_dir():  # not an image; a symlinked folder
                    continue
                elif entry.is_file():  # follows a symlink; a looping one raises ELOOP
                    yield relative
                elif entry.is_symlink():
                    problems.append((relative, "broken symbolic link: its target does not exist"))
                else:
                    problems.append((relative, "not a regular file (a FIFO, socket or device); not read"))
            except OSError as err:
                problems.append((relative, f"cannot read the file ({err.strerror or err})"))


def list_images(folder: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS, *,
                problems: list[tuple[str, str]] | None = None) -> list[str]:
    """Every file under ``folder`` with an image extension, as sorted "/"-separated relative paths.

    Entries that cannot be read (see ``_walk_images``) are appended to ``problems`` as
    (relative path, reason) when it is given, else left out.
    """
    return sorted(_walk_images(os.fspath(folder), _extension_tuple(extensions), [] if problems is None else problems))


def check_embed_paths(folder: str | os.PathLike, index_path: str | os.PathLike,
                      extensions: Iterable[str] = IMAGE_EXTENSIONS) -> None:
    """What ``embed_folder`` checks before any work; the command line runs it before loading the model.

    Raises, naming the path: FileNotFoundError (no such folder; the index's folder does not exist),
    ValueError (not a folder; the index path's folder is a file; no image file in the folder),
    IsADirectoryError (the index path is a folder), PermissionError (the folder cannot be listed;
    no file can be created next to the index).
    """
    folder, index_path = os.fspath(folder), os.fspath(index_path)
    if not os.path.exists(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is a file, not a folder of images; give the folder that holds the images")
    try:
        os.scandir(folder).close()
    except PermissionError as err:
        raise PermissionError(f"cannot list the image folder {folder}: {err.strerror}") from None

    if os.path.isdir(index_path):
        raise IsADirectoryError(f"the index path {index_path} is a folder; give a file name, such as "
                                f"{os.path.join(index_path, 'index.safetensors')}")
    if os.path.exists(index_path) and not os.path.isfile(index_path):
        raise ValueError(f"the index path {index_path} exists and is not a regular file")
    parent = os.path.dirname(os.path.abspath(index_path))
    if not os.path.exists(parent):
        raise FileNotFoundError(f"cannot write the index {index_path}: the folder {parent} does not exist "
                                "(create it first)")
    if not os.path.isdir(parent):
        raise ValueError(f"cannot write the index {index_path}: {parent} is a file, not a folder")
    try:  # the index is written as a temporary file in this folder, then renamed
        handle, probe = tempfile.mkstemp(dir=parent, prefix=".minialign-write-check-")
        os.close(handle)
        os.remove(probe)
    except OSError as err:
        raise PermissionError(f"cannot write the index {index_path}: cannot create a file in {parent} "
                              f"({err.strerror or err})") from None

    extensions = _extension_tuple(extensions)
    problems: list[tuple[str, str]] = []
    if next(iter(_walk_images(folder, extensions, problems)), None) is None:
        unreadable = f"; not read: {', '.join(f'{p} ({why})' for p, why in problems[:3])}" if problems else ""
        raise ValueError(
            f"no image files in {folder} (searched recursively, symlinked folders not entered, for the "
            f"extensions {' '.join(extensions)}, in any case){unreadable}; nothing to embed"
        )


@dataclass
class EmbedReport:
    index_path: str
    embedded: int  # images embedded in this run
    already_indexed: int  # images in the folder that the index already held (skipped)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason), skipped
    stale: int = 0  # index entries whose file is no longer in the folder (kept)
    total: int = 0  # rows in the index file (after its last write)
    interrupted: bool = False  # Ctrl-C stopped the run; the finished batches are saved (total)

    def saved(self) -> str:
        """What the index file holds, for the line printed after an interruption."""
        if self.total == 0:
            return f"no image saved to {self.index_path} yet; run the same command again"
        return f"{self.total} images saved to {self.index_path}; run the same command again to resume"

    def summary(self) -> str:
        if self.interrupted:  # one line, for stderr
            return f"interrupted: {self.saved()}"
        lines = [
            f"{self.index_path}: {self.total} images indexed ({self.embedded} embedded now, "
            f"{self.already_indexed} already indexed, {len(self.failed)} failed"
            + (f", {self.stale} no longer in the folder)" if self.stale else ")")
        ]
        lines += [f"  failed: {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


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

    model: an ``AlignModel`` (anything with ``get_image_features``, ``config.projection_dim`` and
    the ``params`` that ``model_fingerprint`` hashes).
    processor: an ``AlignProcessor``; its image processor prepares each file.
    model_id: the model's name, recorded in the index; None records ``model_fingerprint(model)``.
    The fingerprint itself is always recorded too, and checked on resume.
    checkpoint_every: rewrite the index after this many batches (it is also written at the end).
    See the module docstring for what is checked first, skipped, retried and kept. An exception
    (Ctrl-C: ``KeyboardInterrupt``) leaves after saving the finished batches and carries the
    report as ``err.embed_report`` (``interrupted=True`` for Ctrl-C, ``total`` = rows saved).
    """
    if batch_size < 1 or checkpoint_every < 1:
        raise ValueError(f"batch_size and checkpoint_every must be >= 1, got {batch_size} and {checkpoint_every}")
    folder, index_path = os.fspath(folder), os.fspath(index_path)
    check_embed_paths(folder, index_path, extensions)
    model_sha256 = model_fingerprint(model)
    if model_id is None:
        model_id = model_sha256
    dim = model.config.projection_dim

    # What the index already holds, as a dict {path: [D] embedding}.
    rows: dict[str, np.ndarray] = {}
    record_hash = False  # an index that does not know its model's hash gets it now
    if os.path.exists(index_path):
        previous = load_index(index_path)
        same = (previous.model_sha256 == model_sha256 if previous.model_sha256 is not None
                else previous.model_id == model_id)
        if not same:
            raise ValueError(
                f"{index_path} holds embeddings from {_describe_model(previous.model_id, previous.model_sha256)}, "
                f"not from {_describe_model(model_id, model_sha256)}; embeddings of different models cannot share "
                "an index (delete it or choose another index path)"
            )
        if previous.dim != dim:
            raise ValueError(f"{index_path} holds {previous.dim}-d embeddings but the model gives {dim}-d ones")
        model_id = previous.model_id  # the same weights under another name: keep the recorded one
        record_hash = previous.model_sha256 is None
        rows = dict(zip(previous.paths, np.array(previous.embeddings)))  # a copy: the file gets replaced
        del previous

    report = EmbedReport(index_path=index_path, embedded=0, already_indexed=0, total=len(rows))
    images = list_images(folder, extensions, problems=report.failed)
    todo = [path for path in images if path not in rows]
    report.already_indexed, report.stale = len(images) - len(todo), len(rows.keys() - set(images))

    def save() -> None:
        paths = sorted(rows)
        embeddings = np.stack([rows[p] for p in paths]) if paths else np.zeros((0, dim), np.float32)
        save_index(Index(embeddings, paths, model_id, model_sha256), index_path)
        report.total = len(paths)

    bar = progress_bar(len(todo), "embedding", enabled=progress)
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
    except BaseException as err:
        report.interrupted = isinstance(err, KeyboardInterrupt)
        err.embed_report = report  # for the caller's "N images saved" line
        if unsaved:
            save()  # keep the finished batches for the next run
        if report.interrupted and not err.args:  # Ctrl-C's KeyboardInterrupt() now says what was kept
            err.args = (report.saved(),)
        raise
    finally:
        bar.close()
    if unsaved or record_hash or not os.path.exists(index_path):
        save()
    report.failed.sort()
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


def check_index_model(index: Index, model, *, model_id: str | None = None, force: bool = False) -> str | None:
    """Refuse to search ``index`` with a model other than the one that made it; return a note or None.

    Same model = same ``model_fingerprint`` (whatever the names). When the index does not record
    its fingerprint (version "1" files), it is compared by ``model_id`` if given (the command line
    gives its ``--model``), else it cannot be checked: a note says so.
    ``force=True`` turns a refusal into a note. ``model`` may also be its fingerprint string.
    Raises ValueError naming both models (name and short hash).
    """
    model_sha256 = model if isinstance(model, str) else model_fingerprint(model)
    where = index.file or "the index"
    ours = _describe_model(model_id, model_sha256)
    theirs = _describe_model(index.model_id, index.model_sha256)
    if index.model_sha256 is not None:
        mismatch = index.model_sha256 != model_sha256
    elif model_id is not None:
        mismatch = index.model_id != model_id
        if not mismatch:
            return (f"{where} does not record its model's weights hash, only the name {index.model_id!r}, which "
                    "matches; run `embed` on its folder again with this model to record the hash")
    else:
        return f"{where} does not record its model's weights hash; cannot check that {ours} made it"
    if not mismatch:
        return None
    if force:
        return f"{where} was made by {theirs}, searching it with {ours} anyway (forced): scores may mean nothing"
    same_name_hint = ("" if index.model_sha256 is not None else
                      " (the index, older than weights hashes, is known by name only: if that is this model under "
                      "another name, force the search)")
    raise ValueError(
        f"{where} was made by {theirs}, not by {ours}: similarities between embeddings of different models "
        "mean nothing. Search with the model that made it, re-embed the folder into a new index with this one, "
        f"or force the search (force=True; command line: --force){same_name_hint}"
    )


def check_text_query(text: str) -> str:
    """The text query, refused when it is not a string or is empty or blank (ValueError)."""
    if not isinstance(text, str):
        raise TypeError(f"a text query must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"the text query is {'empty' if not text else 'only whitespace'} ({text!r}); "
                         "give a few words describing the image to find")
    return text


def search_text(model, processor, index: Index, text: str, k: int = 5, *,
                force: bool = False) -> list[dict[str, Any]]:
    """Search ``index`` with a caption, embedded by ``model``'s text tower.

    Runs ``check_index_model`` first (hashing the weights: about half a second for align-base);
    ``force=True`` skips it, e.g. for many queries after one explicit check.
    """
    check_text_query(text)
    if not force:
        check_index_model(index, model)
    return search(index, embed_texts(model, processor, [text])[0], k)


def search_image(model, processor, index: Index, image: Any, k: int = 5, *,
                 force: bool = False) -> list[dict[str, Any]]:
    """Search ``index`` with an image (path, PIL image or array), embedded by ``model``'s image tower.

    Runs ``check_index_model`` first, as ``search_text`` does; ``force=True`` skips it.
    """
    if not force:
        check_index_model(index, model)
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
