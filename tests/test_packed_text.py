"""The text tower packed (``packed=True``: the real tokens only) equals it padded, on every backend.

Packed, no pad token is computed: the real tokens are rows ``[N, H]``, the sequences one after
another, attention runs per sequence (``ops.packed_attention``) and the outputs are scattered
back into the padded batch. A padded key gets attention weight exactly 0 in the padded path, so
every real token's output must match; only the padding's own outputs differ (zeros packed). The
pooler reads each sequence's first real token, which is the padded path's ``x[:, 0]`` wherever
column 0 is a real token.

Masks are drawn right-padded (the tokenizer's) and arbitrary (holes, left padding), each row with
at least one real token. Under TRITON_INTERPRET=1 the Triton backend runs here on the CPU in
float32; its head dim is 16, the attention kernel's smallest.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import TOLERANCES, assert_close
from minialign import AlignModel, AlignTextConfig
from minialign.backends import get_ops
from minialign.config import nano_config
from minialign.text_model import AlignTextModel

# Packed and padded are the same float32 math; the matrix products have other shapes (N rows
# instead of B*T), so sums run in other orders: rounding, compounded over the layers, as between
# two backends (the model-level float32 tolerance).
TOL = TOLERANCES["float32_model"]
CONFIG = AlignTextConfig(vocab_size=50, hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                         intermediate_size=48, max_position_embeddings=16, type_vocab_size=2)
_HAS_TRITON = all(importlib.util.find_spec(name) is not None for name in ("torch", "triton"))
BACKENDS = ["reference", "numpy", pytest.param("triton", marks=pytest.mark.skipif(
    not _HAS_TRITON, reason="the triton backend needs torch and triton (the dev extra installs both)"))]


def _params(seed: int) -> dict[str, np.ndarray]:
    """Random, non-trivial weights of CONFIG's shapes (LayerNorm gains and biases not 1 and 0)."""
    rng = np.random.default_rng(seed)
    shapes = AlignTextModel.expected_shapes(CONFIG)
    return {name: (1 + 0.2 * rng.standard_normal(shape) if name.endswith("LayerNorm.weight")
                   else 0.3 * rng.standard_normal(shape)).astype(np.float32) for name, shape in shapes.items()}


_models: dict[str, AlignTextModel] = {}


def _model(backend: str) -> AlignTextModel:
    if backend not in _models:
        _models[backend] = AlignTextModel(CONFIG, _params(7), ops=get_ops(backend))
    return _models[backend]


@st.composite
def batches(draw):
    """(ids, mask, token types): B in 1..4, T in 1..12, every row with >= 1 real token; the mask
    right-padded or arbitrary, one row of length T (the longest sequence) and one of length 1."""
    B, T = draw(st.integers(1, 4)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):  # right padding, lengths incl. 1 and T
        lengths = rng.integers(1, T + 1, B)
        lengths[0] = T
        lengths[-1] = 1 if B > 1 else lengths[-1]
        mask = np.arange(T)[None, :] < lengths[:, None]
    else:  # any pattern: holes, left padding, padding first
        mask = rng.random((B, T)) < 0.6
        mask[np.arange(B), rng.integers(0, T, B)] = True  # >= 1 real token a row
    ids = rng.integers(0, CONFIG.vocab_size, (B, T))
    types = rng.integers(0, CONFIG.type_vocab_size, (B, T))
    return ids, mask.astype(np.int64), types


def check_packed_equals_padded(model: AlignTextModel, ids, mask, types) -> None:
    padded = model(ids, mask, types, output_hidden_states=True)
    packed = model(ids, mask, types, output_hidden_states=True, packed=True)
    to_numpy = model.ops.to_numpy
    real = mask != 0
    for name, a, b in [("last_hidden_state", packed.last_hidden_state, padded.last_hidden_state),
                       *((f"hidden_states[{i}]", a, b) for i, (a, b) in
                         enumerate(zip(packed.hidden_states, padded.hidden_states, strict=True)))]:
        a, b = to_numpy(a), to_numpy(b)
        assert a.shape == b.shape == (*ids.shape, CONFIG.hidden_size), name
        assert_close(a[real], b[real], **TOL, name=f"{name} at the real tokens")
        assert not a[~real].any(), f"{name}: the padding is not zeros"
    first_real = real[:, 0]  # where the padded path's x[:, 0] is a real token, the poolers agree
    assert_close(to_numpy(packed.pooler_output)[first_real], to_numpy(padded.pooler_output)[first_real], **TOL,
                 name="pooler_output")


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_equals_padded_hand_case(backend):
    # Right padding (lengths 5, 1, 3), then the same tokens left-padded and with a hole: the real
    # tokens' outputs are the padded path's in every layout.
    ids = np.arange(15).reshape(3, 5) % CONFIG.vocab_size
    right = np.array([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]])
    holed = np.array([[1, 1, 1, 1, 1], [0, 0, 0, 0, 1], [1, 0, 1, 0, 1]])
    for mask in (right, holed):
        check_packed_equals_padded(_model(backend), ids, mask, np.zeros_like(ids))


@pytest.mark.parametrize("backend", BACKENDS)
@given(batch=batches())
@settings(max_examples=6)  # the Triton interpreter takes seconds per example
def test_packed_equals_padded(backend, batch):
    check_packed_equals_padded(_model(backend), *batch)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pack_layout(backend):
    """What pack makes, by hand: rows in order, positions = columns, cu_seqlens, the way back."""
    model = _model(backend)
    ids = np.array([[5, 6, 7], [8, 9, 10]])
    mask = np.array([[1, 1, 0], [0, 1, 1]])
    types = np.array([[0, 1, 0], [1, 1, 0]])
    batch = model.pack(ids, mask, types)
    to_list = lambda a: np.asarray(model.ops.to_numpy(a) if model.ops.NAME == "triton" else a).tolist()  # noqa: E731
    assert to_list(batch.input_ids) == [5, 6, 9, 10]
    assert to_list(batch.token_type_ids) == [0, 1, 1, 0]
    assert to_list(batch.position_ids) == [0, 1, 1, 2]  # each token's column: the padded path's position
    assert to_list(batch.cu_seqlens) == [0, 2, 4] and batch.max_seqlen == 2
    assert to_list(batch.first_token) == [0, 2]
    assert to_list(batch.padded_index) == [0, 1, 4, 5] and batch.shape == (2, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_text_features_equal_the_buckets(backend, tmp_path):
    """get_text_features packed (one forward, no padding) and in length buckets: the same
    features for a right-padded batch; packed is the Triton backend's default (ops.PACK_TEXT)."""
    config = nano_config(vocab_size=40)  # head dim 64 / 2 = 32: one the attention kernel takes
    params = {name: 0.3 * np.random.default_rng(len(name)).standard_normal(shape).astype(np.float32)
              for name, shape in AlignModel.expected_shapes(config).items()}
    params = {n: (np.abs(p) + 0.5 if n.endswith(("running_var", "LayerNorm.weight")) else p) for n, p in params.items()}
    model = AlignModel(config, params, ops=get_ops(backend))
    rng = np.random.default_rng(4)
    lengths = np.array([7, 1, 4, 7, 2])
    mask = (np.arange(7)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(0, 40, mask.shape) * mask
    packed = model.get_text_features(ids, mask, packed=True)
    assert_close(packed, model.get_text_features(ids, mask, packed=False, bucket_size=2), **TOL, name="features")
    default = model.get_text_features(ids, mask)
    assert_close(default, packed if model.ops.PACK_TEXT else model.get_text_features(ids, mask, packed=False),
                 atol=0, rtol=0, name="the default")
    assert model.ops.PACK_TEXT == (backend == "triton")


def test_packed_refuses_what_it_cannot_do():
    model = _model("numpy")
    ids = np.ones((2, 3), np.int64)
    with pytest.raises(ValueError, match=r"attention_mask\[1\] is all 0: a packed batch needs at least one real token"):
        model(ids, np.array([[1, 1, 0], [0, 0, 0]]), packed=True)
    with pytest.raises(ValueError, match="packed=True returns no attention probabilities"):
        model(ids, np.ones((2, 3), np.int64), packed=True, output_attentions=True)
