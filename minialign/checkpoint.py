"""Reading and writing transformers-format checkpoints (safetensors, optionally a torch .bin).

A checkpoint is a flat dict ``{weight name: array}`` whose names are transformers' (for example
``text_model.encoder.layer.0.attention.self.query.weight``). This module reads such a dict from
a directory and checks it against the names and shapes a model expects; the models decide what
the names are.

Reading safetensors by hand
---------------------------
The format is an 8-byte little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then the raw
little-endian tensor bytes. ``safetensors.numpy.load_file`` copies every tensor into memory and
has no bfloat16 (NumPy has none), so minialign reads the header itself and memory-maps the data:
a float32 or float16 tensor is a read-only view into the file's pages, and only bfloat16 (which
must be decoded) costs a copy. Writing uses the ``safetensors`` library.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping

import numpy as np

from .jsonfile import read_json_object

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
TORCH_BIN_NAME = "pytorch_model.bin"

# safetensors dtype strings -> NumPy little-endian dtypes. "BF16" is decoded separately below.
_NUMPY_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}
_ITEM_SIZES = {"BF16": 2, **{k: np.dtype(v).itemsize for k, v in _NUMPY_DTYPES.items()}}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the same sanity limit the safetensors library applies


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model it is loaded into."""


def bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    """Decode bfloat16 bit patterns (given as uint16) into float32.

    bfloat16 is the top half of an IEEE float32: same sign bit, same 8 exponent bits, 7 of the 23
    mantissa bits. Shifting the 16 bits into the high half of a uint32 (low half zero) therefore
    gives exactly the float32 bit pattern of the same number -- NaN and inf included.
    """
    return (raw.astype(np.uint32) << 16).view(np.float32)


def float32_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Encode float32 as bfloat16 bit patterns (uint16), rounding to nearest even like torch."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF  # round half to even on the 16 dropped bits
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    out[nan] = 0x7FC0  # keep NaN a quiet NaN (rounding could carry it into inf)
    return out


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Memory-map one .safetensors file: ``{name: read-only array}``. bfloat16 becomes float32."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(_MAX_HEADER_BYTES, size - 8):
                raise CheckpointError(
                    f"{path}: corrupt or truncated safetensors file (header claims {header_len} bytes, "
                    f"file has {size})"
                )
            header_bytes = fh.read(header_len)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file not found: {path}") from None
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)

    data_start = 8 + header_len
    data_size = size - data_start
    # One mapping for the whole data block; every tensor is a view into it.
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start, shape=(data_size,)) if data_size else None
    tensors = {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt safetensors header entry for {name!r}: {info!r}") from None
        if dtype not in _ITEM_SIZES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        nbytes = _ITEM_SIZES[dtype] * int(np.prod(shape, dtype=np.int64))
        if not (0 <= begin <= end and end - begin == nbytes):
            raise CheckpointError(
                f"{path}: tensor {name!r} of shape {shape} and dtype {dtype} needs {nbytes} bytes, "
                f"header gives offsets {begin}..{end}"
            )
        if end > data_size:
            raise CheckpointError(
                f"{path}: truncated file: tensor {name!r} ends at byte {end} of the data block, "
                f"which has only {data_size} bytes"
            )
        raw = data[begin:end] if nbytes else np.empty(0, np.uint8)
        if dtype == "BF16":
            tensors[name] = bfloat16_to_float32(raw.view("<u2")).reshape(shape)
        else:
            tensors[name] = raw.view(_NUMPY_DTYPES[dtype]).reshape(shape)
    return tensors


def write_safetensors(tensors: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write ``{name: array}`` as safetensors, with the metadata transformers expects."""
    from safetensors.numpy import save_file

    # np.asarray(order="C"), not np.ascontiguousarray: the latter turns a 0-d scalar (ALIGN's
    # temperature) into shape [1], which transformers then refuses as a size mismatch.
    contiguous = {name: np.asarray(array, order="C") for name, array in tensors.items()}
    save_file(contiguous, os.fspath(path), metadata={"format": "pt"})


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
    """Read a pickled ``pytorch_model.bin`` -- only with torch, and only with ``weights_only=True``."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path} is a pickled PyTorch checkpoint and torch is not installed. minialign never "
            "unpickles files itself; convert it to safetensors (e.g. with transformers: "
            "model.save_pretrained(dir, safe_serialization=True)) or install torch."
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types here: unpickling, zip, EOF
        raise CheckpointError(f"{path}: cannot read PyTorch checkpoint with weights_only=True: {err}") from None
    return {name: t.float().numpy() if t.is_floating_point() else t.numpy() for name, t in state.items()}


def load_state_dict(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every weight in a checkpoint directory, as transformers saved it.

    Looks for, in order: ``model.safetensors``, a sharded ``model.safetensors.index.json``, then
    ``pytorch_model.bin`` (through torch only). A path to a single file is read directly.
    """
    directory = os.fspath(directory)
    if os.path.isfile(directory):
        if directory.endswith(".safetensors"):
            return read_safetensors(directory)
        if directory.endswith(".bin"):
            return _read_torch_bin(directory)
        raise CheckpointError(f"{directory}: not a .safetensors or .bin checkpoint file")
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint directory not found: {directory}")

    single = os.path.join(directory, SAFETENSORS_NAME)
    if os.path.exists(single):
        return read_safetensors(single)
    index_path = os.path.join(directory, SAFETENSORS_INDEX_NAME)
    if os.path.exists(index_path):
        return _read_sharded(directory, index_path)
    bin_path = os.path.join(directory, TORCH_BIN_NAME)
    if os.path.exists(bin_path):
        return _read_torch_bin(bin_path)
    raise CheckpointError(
        f"{directory}: no weights found (looked for {SAFETENSORS_NAME}, {SAFETENSORS_INDEX_NAME}, {TORCH_BIN_NAME})"
    )


def _read_sharded(directory: str, index_path: str) -> dict[str, np.ndarray]:
    weight_map = read_json_object(index_path, error=CheckpointError).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
        raise CheckpointError(f"{index_path}: not a valid safetensors index "
                              '(needs a "weight_map" object of weight name -> shard file)')
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        shard_tensors = read_safetensors(os.path.join(directory, shard))
        expected = {name for name, file in weight_map.items() if file == shard}
        if missing := sorted(expected - shard_tensors.keys()):
            raise CheckpointError(f"{shard}: the index lists {missing} in this shard, but the shard lacks them")
        tensors.update(shard_tensors)
    return tensors


def strip_prefix(state: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Keep the weights under ``prefix`` (e.g. "text_model."), with the prefix removed."""
    return {name[len(prefix):]: array for name, array in state.items() if name.startswith(prefix)}


def check_state_dict(
    state: Mapping[str, np.ndarray],
    expected_shapes: Mapping[str, tuple[int, ...]],
    *,
    strict: bool = True,
    ignorable: Iterable[str] = (),
    source: str = "checkpoint",
) -> dict[str, np.ndarray]:
    """Check names and shapes against what the model expects; return float32 arrays.

    Every problem is collected before raising, so one error lists every missing key, every
    unexpected key and every shape mismatch (with expected and found shapes). With
    ``strict=False`` missing and unexpected keys are tolerated (missing ones stay absent), shape
    mismatches never are. ``ignorable`` names keys that may appear in checkpoints but carry no
    learned state (old transformers versions saved the ``position_ids`` buffer, for example).

    float32 memory maps pass through without a copy; float16 is widened to float32 once here.
    """
    ignorable = set(ignorable)
    missing = sorted(set(expected_shapes) - set(state))
    unexpected = sorted(set(state) - set(expected_shapes) - ignorable)
    wrong_shape = [
        f"{name}: expected {tuple(shape)}, found {tuple(state[name].shape)}"
        for name, shape in expected_shapes.items()
        if name in state and tuple(state[name].shape) != tuple(shape)
    ]
    problems = []
    if wrong_shape:
        problems.append("shape mismatch:\n    " + "\n    ".join(wrong_shape))
    if strict and missing:
        problems.append("missing keys:\n    " + "\n    ".join(f"{k}: expected {tuple(expected_shapes[k])}" for k in missing))
    if strict and unexpected:
        problems.append("unexpected keys:\n    " + "\n    ".join(f"{k}: found {tuple(state[k].shape)}" for k in unexpected))
    if problems:
        raise CheckpointError(f"{source} does not fit the model config:\n  " + "\n  ".join(problems))
    return {name: np.asarray(state[name], dtype=np.float32) for name in expected_shapes if name in state}
