"""Checkpoint reading: memory-mapped safetensors in every float dtype, shards, strictness, bad files."""

import builtins
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file as torch_save_file

from helpers import assert_close
from minialign.checkpoint import (
    CheckpointError,
    bfloat16_to_float32,
    check_state_dict,
    float32_to_bfloat16,
    load_state_dict,
    read_safetensors,
)


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(3, 5, generator=g), "b.bias": torch.randn(7, generator=g),
            "c": torch.randn(2, 1, 4, generator=g) * 1e4, "empty": torch.zeros(0, 3)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_reads_every_float_dtype_exactly(tmp_path, dtype):
    tensors = {k: v.to(dtype) for k, v in _tensors().items()}
    torch_save_file(tensors, tmp_path / "model.safetensors")
    loaded = load_state_dict(tmp_path)
    assert loaded.keys() == tensors.keys()
    for name, ref in tensors.items():
        # Decoding is exact: every value is the same number in float32 (tolerance 0).
        assert_close(loaded[name].astype(np.float32), ref.float(), atol=0, rtol=0, name=name)
        assert loaded[name].shape == tuple(ref.shape)


def test_bfloat16_decoding_special_values():
    values = torch.tensor([0.0, -0.0, 1.0, -2.5, float("inf"), float("-inf"), float("nan"), 1e-40, 3.0e38])
    raw = values.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert_close(bfloat16_to_float32(raw), values.to(torch.bfloat16).float(), atol=0, rtol=0)
    # and encoding rounds to nearest even like torch
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 100
    ours = float32_to_bfloat16(x)
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert (ours == theirs).all()


def test_float32_is_memory_mapped_not_copied(tmp_path):
    torch_save_file(_tensors(), tmp_path / "model.safetensors")
    loaded = read_safetensors(tmp_path / "model.safetensors")
    arr = loaded["a.weight"]
    assert not arr.flags.owndata and not arr.flags.writeable
    base = arr
    while base.base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap)
    # and the model-side check passes float32 through without a copy
    checked = check_state_dict(loaded, {"a.weight": (3, 5)}, strict=False)
    assert np.shares_memory(checked["a.weight"], arr)


def test_sharded_checkpoint(tmp_path):
    tensors = _tensors()
    torch_save_file({"a.weight": tensors["a.weight"]}, tmp_path / "model-00001-of-00002.safetensors")
    torch_save_file({k: v for k, v in tensors.items() if k != "a.weight"}, tmp_path / "model-00002-of-00002.safetensors")
    weight_map = {k: "model-00001-of-00002.safetensors" if k == "a.weight" else "model-00002-of-00002.safetensors"
                  for k in tensors}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = load_state_dict(tmp_path)
    assert loaded.keys() == tensors.keys()
    assert_close(loaded["c"], tensors["c"], atol=0, rtol=0)
    # an index that promises a tensor the shard lacks is named
    weight_map["ghost"] = "model-00002-of-00002.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002.safetensors: the index lists \['ghost'\]"):
        load_state_dict(tmp_path)



@pytest.mark.parametrize("content, message", [
    ('{"weight_map": ', "model.safetensors.index.json is not valid JSON"),
    ("[1, 2]", "model.safetensors.index.json: expected a JSON object, found list"),
    ('{"metadata": {}}', 'model.safetensors.index.json: not a valid safetensors index \\(needs a "weight_map"'),
    ('{"weight_map": {"a.weight": 3}}', "not a valid safetensors index"),
])
def test_a_broken_safetensors_index_is_a_checkpoint_error_naming_the_file(tmp_path, content, message):
    (tmp_path / "model.safetensors.index.json").write_text(content)
    with pytest.raises(CheckpointError, match=message):
        load_state_dict(tmp_path)

def test_truncated_and_corrupt_files_are_clear_errors(tmp_path):
    torch_save_file(_tensors(), tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match=r"truncated file: tensor '.+' ends at byte"):
        read_safetensors(path)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="truncated safetensors file"):
        read_safetensors(path)
    path.write_bytes(data[:40])
    with pytest.raises(CheckpointError, match="header claims"):
        read_safetensors(path)
    header_len = int.from_bytes(data[:8], "little")
    path.write_bytes(data[:8] + b"\xff" * header_len + data[8 + header_len:])
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        read_safetensors(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no header"):
        read_safetensors(path)
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        read_safetensors(tmp_path / "missing.safetensors")


def test_missing_directory_or_weights(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        load_state_dict(tmp_path / "nope")
    with pytest.raises(CheckpointError, match=r"no weights found \(looked for model.safetensors"):
        load_state_dict(tmp_path)


def test_strict_check_names_every_offending_key():
    state = {"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float32), "extra.1": np.zeros(1, np.float32),
             "extra.2": np.zeros(2, np.float32)}
    expected = {"a": (3, 2), "b": (4,), "c": (5,), "d": (6, 6)}
    with pytest.raises(CheckpointError) as info:
        check_state_dict(state, expected, source="test.safetensors")
    msg = str(info.value)
    assert "a: expected (3, 2), found (2, 3)" in msg
    assert "c: expected (5,)" in msg and "d: expected (6, 6)" in msg
    assert "extra.1: found (1,)" in msg and "extra.2: found (2,)" in msg
    assert msg.startswith("test.safetensors does not fit")
    # non-strict tolerates missing / unexpected names, never wrong shapes
    with pytest.raises(CheckpointError, match="a: expected"):
        check_state_dict(state, expected, strict=False)
    ok = check_state_dict(state, {"b": (4,), "c": (5,)}, strict=False)
    assert list(ok) == ["b"] and ok["b"].dtype == np.float32


def test_torch_bin_uses_weights_only(tmp_path):
    tensors = _tensors()
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    loaded = load_state_dict(tmp_path)
    assert_close(loaded["a.weight"], tensors["a.weight"], atol=0, rtol=0)
    # A pickle that is not plain tensors is refused by weights_only, and reported as such.
    torch.save({"a": _Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_state_dict(tmp_path)


class _Evil:
    pass


def test_torch_bin_without_torch_says_to_convert(tmp_path, monkeypatch):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("no torch here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(CheckpointError, match="convert it to safetensors"):
        load_state_dict(tmp_path)
