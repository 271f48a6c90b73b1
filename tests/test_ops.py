"""Every op of the backends' contract (minialign/backends/contract.py) against torch.

One test body per op, run on every backend (minitorch's pattern): "reference" (the plain math),
"numpy" (the same math made fast) and "triton" (the kernels; on the CPU under TRITON_INTERPRET=1,
set by conftest.py, when there is no GPU). Inputs are NumPy arrays handed to the backend through
its own ``from_numpy``, outputs come back through ``to_numpy``, so one body serves all three.
Each op opens with one hand-computed case, then hypothesis draws small, odd and prime shapes.

Also here: the contract itself (every backend has every op), the fast NumPy backend against the
reference op on the same inputs, clear errors for bad arguments, erf to float32 ulps, and the
reference's helper functions (softmax, attention, batchnorm, squeeze-excitation) that are not
ops but that the ops and the training code are built from. The speed machinery of the numpy
backend (threads, bands, strided views) is tested in test_numpy_backend.py.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from transformers.activations import ACT2FN

from helpers import TOLERANCES, assert_close
from minialign.backends import BACKENDS as BACKEND_NAMES
from minialign.backends import contract, get_ops, reference
from minialign.backends import numpy as numpy_backend
from minialign.vision_model import depthwise_padding
from strategies import float_arrays, seeds, small_sizes, tiny_sizes

# float32 op vs torch float32: the same math summed in another order (see helpers.TOLERANCES).
F32 = TOLERANCES["float32"]
t = torch.from_numpy

_HAS_TRITON = all(importlib.util.find_spec(name) is not None for name in ("torch", "triton"))
BACKENDS = [
    "reference",
    "numpy",
    pytest.param("triton", marks=pytest.mark.skipif(
        not _HAS_TRITON, reason="the triton backend needs torch and triton (the dev extra installs both)")),
]
# The two backends that are Python modules of NumPy functions, with their own erf and activations.
MODULE_BACKENDS = {"reference": reference, "numpy": numpy_backend}
# transformers' activation names -> torch's functions (the spec each backend is held to).
# Every activation name, as transformers computes it: its own table (transformers.activations.ACT2FN).
TORCH_ACTIVATIONS = {name: ACT2FN[name] for name in contract.ACTIVATION_NAMES}


@functools.cache
def backend_ops(backend: str) -> contract.Ops:
    """One ops object per backend for the whole file (TritonOps holds its device and dtype)."""
    return get_ops(backend)


def call(backend: str, op: str, *args, **kwargs):
    """``ops.<op>(*args, **kwargs)`` on ``backend``: NumPy arrays in through its ``from_numpy``,
    results out through its ``to_numpy`` (each of a tuple; None stays None)."""
    ops = backend_ops(backend)

    def arg(a):
        return ops.from_numpy(a) if isinstance(a, np.ndarray) else a

    out = getattr(ops, op)(*map(arg, args), **{k: arg(v) for k, v in kwargs.items()})
    if isinstance(out, tuple):
        return tuple(None if o is None else ops.to_numpy(o) for o in out)
    return ops.to_numpy(out)


def randn(rng: np.random.Generator, *shape, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def nhwc(x: torch.Tensor) -> np.ndarray:
    """A torch NCHW tensor as a NumPy NHWC array (the ops' layout)."""
    return x.permute(0, 2, 3, 1).numpy()


def nchw(x: np.ndarray) -> torch.Tensor:
    """A NumPy NHWC array as a torch NCHW tensor (torch's layout)."""
    return t(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------
# the contract
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_implements_the_whole_contract(backend):
    ops = backend_ops(backend)
    assert contract.missing_ops(ops) == []
    assert isinstance(ops, contract.Ops)  # the Protocol is runtime-checkable: every member is there
    assert ops.NAME == backend
    not_callable = [name for name in contract.OP_NAMES if not callable(getattr(ops, name))]
    assert not_callable == []


def test_contract_names_every_op_and_reports_what_is_missing():
    assert BACKEND_NAMES == ("numpy", "reference", "triton")
    assert set(contract.OP_NAMES) == {
        "from_numpy", "prepare_weight", "to_numpy", "is_floating_point", "nchw_to_nhwc", "nhwc_to_nchw", "embedding",
        "add", "layer_norm", "add_layer_norm", "linear_add_layer_norm", "linear", "prepare_linears", "linears",
        "multi_head_attention", "packed_attention", "scatter_rows", "tanh", "conv2d", "pointwise_conv", "depthwise_conv2d",
        "squeeze_excite_gate", "global_pool"}

    class HalfABackend:
        NAME = "half"
        linear = staticmethod(reference.linear)

    missing = contract.missing_ops(HalfABackend())
    assert "linear" not in missing and "NAME" not in missing
    assert set(missing) == {"PACK_TEXT"} | set(contract.OP_NAMES) - {"linear"}


def test_the_architecture_calls_only_contract_ops():
    """text_model.py, vision_model.py and align_model.py touch activations only through ``ops.``:
    every name they call there is in the contract, so a backend with every op runs the model."""
    import minialign.align_model
    import minialign.text_model
    import minialign.vision_model

    called = set()
    for module in (minialign.text_model, minialign.vision_model, minialign.align_model):
        with open(module.__file__, encoding="utf-8") as fh:
            called |= set(re.findall(r"\bops\.(\w+)\(", fh.read()))
    assert called, "found no ops calls: has the naming changed?"
    assert called <= set(contract.OP_NAMES), f"not in the contract: {sorted(called - set(contract.OP_NAMES))}"


def test_get_ops_names_the_backends():
    message = "backend must be one of ('numpy', 'reference', 'triton'), got 'jax'"
    with pytest.raises(ValueError, match=re.escape(message)):
        get_ops("jax")
    assert get_ops() is numpy_backend and get_ops("reference") is reference


# ----------------------------------------------------------------------------------------------
# arrays in and out
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_from_numpy_and_to_numpy(backend):
    ops = backend_ops(backend)
    floats = np.array([[0.5, -1.25], [3.0, 1e-3]])  # float64: the backend computes in float32
    x = ops.from_numpy(floats)
    assert ops.is_floating_point(x)
    back = ops.to_numpy(x)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_array_equal(back, floats.astype(np.float32))
    ids = ops.from_numpy(np.array([[3, 0, 7]]))
    assert not ops.is_floating_point(ids)  # integers stay integers (token ids index tables)
    assert ops.is_floating_point(ops.from_numpy([[1.0, 2.0]]))  # nested lists work too


@pytest.mark.parametrize("backend", BACKENDS)
def test_layout_changes_hand_case(backend):
    # [1, 2, 1, 2] NCHW: channel 0 holds 0, 1 and channel 1 holds 2, 3 -> NHWC pixels (0, 2), (1, 3).
    x = np.arange(4, dtype=np.float32).reshape(1, 2, 1, 2)
    np.testing.assert_array_equal(call(backend, "nchw_to_nhwc", x), [[[[0, 2], [1, 3]]]])


@pytest.mark.parametrize("backend", BACKENDS)
@given(b=tiny_sizes, c=small_sizes, h=tiny_sizes, w=small_sizes, seed=seeds)
def test_layout_changes_match_torch_permute(backend, b, c, h, w, seed):
    x = randn(np.random.default_rng(seed), b, c, h, w)
    channels_last = call(backend, "nchw_to_nhwc", x)
    np.testing.assert_array_equal(channels_last, t(x).permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(call(backend, "nhwc_to_nchw", channels_last), x)  # and back


# ----------------------------------------------------------------------------------------------
# erf and the activations (the NumPy backends' own functions; Triton's live in kernel epilogues)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", sorted(MODULE_BACKENDS))
def test_erf_hand_values(backend):
    # erf(0) = 0, erf is odd, erf(inf) = 1; erf(1) = 0.8427007929497149 (tables).
    x = np.array([0.0, 1.0, -1.0, np.inf, -np.inf], np.float32)
    assert_close(MODULE_BACKENDS[backend].erf(x), [0.0, 0.8427007929497149, -0.8427007929497149, 1.0, -1.0],
                 atol=1e-7, rtol=0)


@pytest.mark.parametrize("backend", sorted(MODULE_BACKENDS))
def test_erf_is_float32_accurate_on_a_dense_grid(backend):
    # Dense grid over the whole interesting range, plus tiny arguments where relative accuracy
    # is what matters (erf(x) ~ 1.128 x). Few float32 ulps: abs <= 2.5e-7, rel <= 5e-7.
    erf = MODULE_BACKENDS[backend].erf
    x = np.concatenate([np.linspace(-6, 6, 120_001), np.geomspace(1e-30, 0.5, 2000)]).astype(np.float32)
    exact = np.array([math.erf(float(v)) for v in x])
    got = erf(x)
    assert got.dtype == np.float32
    err = np.abs(got.astype(np.float64) - exact)
    assert err.max() <= 2.5e-7
    nonzero = exact != 0
    assert (err[nonzero] / np.abs(exact[nonzero])).max() <= 5e-7
    assert_close(got, torch.erf(t(x)), atol=2.5e-7, rtol=0, name="erf vs torch")


@pytest.mark.parametrize("backend", sorted(MODULE_BACKENDS))
def test_activations_hand_values(backend):
    act = MODULE_BACKENDS[backend].ACTIVATIONS
    x = np.array([-1.0, 0.0, 2.0], np.float32)
    assert_close(act["relu"](x), [0.0, 0.0, 2.0], atol=0, rtol=0)
    assert_close(act["silu"](x), [-1 / (1 + math.e), 0.0, 2 / (1 + math.exp(-2))], atol=1e-7, rtol=1e-6)
    # x * Phi(x): Phi(-1) = 0.15865525393145707, Phi(2) = 0.9772498680518208 (tables).
    assert_close(act["gelu"](x), [-0.15865525393145707, 0.0, 1.9544997361036416], atol=1e-7, rtol=1e-6)
    big = np.array([-1.0, 0.0, 2.0, 7.0], np.float32)
    assert_close(act["relu6"](big), [0.0, 0.0, 2.0, 6.0], atol=0, rtol=0)
    assert_close(act["relu2"](big), [0.0, 0.0, 4.0, 49.0], atol=0, rtol=0)
    assert_close(act["leaky_relu"](big), [-0.01, 0.0, 2.0, 7.0], atol=1e-9, rtol=0)
    # hardswish: x relu6(x + 3) / 6 = -1 * 2 / 6, 0, 2 * 5 / 6, and x itself once x + 3 >= 6.
    assert_close(act["hardswish"](big), [-1 / 3, 0.0, 5 / 3, 7.0], atol=1e-7, rtol=1e-6)
    # quick_gelu at 2: 2 sigmoid(3.404); mish at 0: 0; softplus(0) = ln 2.
    assert_close(act["quick_gelu"](x)[2], 2 / (1 + math.exp(-3.404)), atol=0, rtol=1e-6)
    assert_close(act["sqrtsoftplus"](x)[1], math.sqrt(math.log(2)), atol=0, rtol=1e-6)
    assert act["mish"](x)[1] == 0.0 and act["linear"](x) is x


@pytest.mark.parametrize("backend", sorted(MODULE_BACKENDS))
@given(x=float_arrays((7, 13), scale=4.0))
def test_activations_match_torch(backend, x):
    act = MODULE_BACKENDS[backend].ACTIVATIONS
    assert set(act) == set(contract.ACTIVATION_NAMES)
    for name, torch_fn in TORCH_ACTIVATIONS.items():
        exact = name in ("relu", "relu6", "linear")  # comparisons and selects: nothing to round
        assert_close(act[name](x), torch_fn(t(x)), **(dict(atol=0, rtol=0) if exact else F32), name=name)
        assert act[name](x).dtype == np.float32, name
    assert_close(reference.sigmoid(x), torch.sigmoid(t(x)), **F32, name="sigmoid")


@pytest.mark.parametrize("backend", sorted(MODULE_BACKENDS))
def test_sigmoid_and_silu_saturate_without_warnings(backend):
    x = np.array([-1000.0, -90.0, 90.0, 1000.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow RuntimeWarning would fail the test
        assert_close(reference.sigmoid(x), [0.0, 0.0, 1.0, 1.0], atol=1e-38, rtol=0)
        assert_close(MODULE_BACKENDS[backend].ACTIVATIONS["silu"](x), [0.0, 0.0, 90.0, 1000.0], atol=1e-35, rtol=0)


def test_activation_names_are_the_configs_and_transformers_table():
    """Both towers' configs accept exactly the contract's names, which are every entry of
    transformers' ACT2FN but the two with learned weights (refused, saying so)."""
    from minialign import AlignTextConfig, AlignVisionConfig

    assert AlignTextConfig.SUPPORTED_ACTIVATIONS == AlignVisionConfig.SUPPORTED_ACTIVATIONS == contract.ACTIVATION_NAMES
    assert set(reference.ACTIVATIONS) == set(contract.ACTIVATION_NAMES) == set(numpy_backend.ACTIVATIONS)
    assert set(ACT2FN) == set(contract.ACTIVATION_NAMES) | set(contract.LEARNED_ACTIVATIONS), \
        f"transformers' activation table changed: {sorted(set(ACT2FN) ^ set(contract.ACTIVATION_NAMES))}"
    for name in contract.LEARNED_ACTIVATIONS:
        assert list(ACT2FN[name].parameters()), name  # why they are refused
    for name in contract.ACTIVATION_NAMES:
        assert not list(ACT2FN[name].parameters()), name


# ----------------------------------------------------------------------------------------------
# text ops
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_hand_case(backend):
    # Rows 2, 1, 2 of a 3-row table.
    table = np.array([[0.0, 0.5], [1.0, 2.0], [3.0, 4.0]], np.float32)
    np.testing.assert_array_equal(call(backend, "embedding", np.array([[2, 1, 2]]), table),
                                  [[[3.0, 4.0], [1.0, 2.0], [3.0, 4.0]]])


@pytest.mark.parametrize("backend", BACKENDS)
@given(v=small_sizes, h=small_sizes, shape=st.sampled_from([(3, 4), (7,), (1, 1)]), seed=seeds)
def test_embedding_matches_torch(backend, v, h, shape, seed):
    rng = np.random.default_rng(seed)
    table = randn(rng, v, h)
    ids = rng.integers(0, v, shape)
    assert_close(call(backend, "embedding", ids, table), F.embedding(t(ids), t(table)), atol=0, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_hand_case(backend):
    np.testing.assert_array_equal(call(backend, "add", np.float32([1.0, 2.0]), np.float32([3.0, -2.0])), [4.0, 0.0])


@pytest.mark.parametrize("backend", BACKENDS)
@given(x=float_arrays((3, 5, 7)), y=float_arrays((3, 5, 7)))
def test_add_matches_torch(backend, x, y):
    assert_close(call(backend, "add", x, y), t(x) + t(y), atol=0, rtol=0)  # one rounding, the same


@pytest.mark.parametrize("backend", BACKENDS)
def test_tanh_hand_case(backend):
    # tanh(0) = 0, tanh(1) = 0.7615941559557649 (tables), tanh(+-20) = +-1 to float32.
    hand = call(backend, "tanh", np.float32([0.0, 1.0, 20.0, -20.0]))
    assert_close(hand, [0.0, 0.7615941559557649, 1.0, -1.0], atol=1e-7, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@given(x=float_arrays((5, 3, 7)))
def test_tanh_matches_torch(backend, x):
    assert_close(call(backend, "tanh", x), torch.tanh(t(x)), **F32)


def _layer_norm_params(rng, h):
    return (1 + 0.3 * rng.standard_normal(h)).astype(np.float32), randn(rng, h)  # weight, bias: not 1, 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_norm_hand_case(backend):
    # [1, 2, 3]: mean 2, variance 2/3 (the biased one, as torch) -> [-sqrt(1.5), 0, sqrt(1.5)],
    # then * weight + bias.
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    s = math.sqrt(1.5)
    out = call(backend, "layer_norm", x, np.ones(3, np.float32), np.zeros(3, np.float32), 0.0)
    assert_close(out, [[-s, 0.0, s]], atol=1e-6, rtol=0)
    out = call(backend, "layer_norm", x, np.float32([1.0, 2.0, 3.0]), np.float32([0.0, 1.0, 0.0]), 0.0)
    assert_close(out, [[-s, 1.0, 3 * s]], atol=1e-6, rtol=0)
    # add_layer_norm normalises the sum: x + residual = [1, 2, 3] again.
    out = call(backend, "add_layer_norm", np.float32([[0.5, 0.0, 4.0]]), np.float32([[0.5, 2.0, -1.0]]),
               np.ones(3, np.float32), np.zeros(3, np.float32), 0.0)
    assert_close(out, [[-s, 0.0, s]], atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@given(b=tiny_sizes, T=small_sizes, h=small_sizes, eps=st.sampled_from([1e-12, 1e-5, 1e-3]), data=st.data())
def test_layer_norm_matches_torch(backend, b, T, h, eps, data):
    x = data.draw(float_arrays((b, T, h), scale=5.0), label="x")  # non-centred rows
    weight, bias = _layer_norm_params(np.random.default_rng(data.draw(seeds, label="seed")), h)
    expected = F.layer_norm(t(x), (h,), t(weight), t(bias), eps)
    assert_close(call(backend, "layer_norm", x, weight, bias, eps), expected, **F32)


@pytest.mark.parametrize("backend", BACKENDS)
@given(b=tiny_sizes, T=small_sizes, h=small_sizes, eps=st.sampled_from([1e-12, 1e-5]),
       broadcast=st.booleans(), data=st.data())
def test_add_layer_norm_matches_torch(backend, b, T, h, eps, broadcast, data):
    """LayerNorm(x + residual), with the residual [B, T, H] (BERT's skip connections) or [T, H]
    broadcast over the batch (the position embeddings)."""
    x = data.draw(float_arrays((b, T, h), scale=3.0), label="x")
    residual = data.draw(float_arrays((T, h) if broadcast else (b, T, h)), label="residual")
    weight, bias = _layer_norm_params(np.random.default_rng(data.draw(seeds, label="seed")), h)
    expected = F.layer_norm(t(x) + t(residual), (h,), t(weight), t(bias), eps)
    assert_close(call(backend, "add_layer_norm", x, residual, weight, bias, eps), expected, **F32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_add_layer_norm_hand_case(backend):
    # x W^T + b = [1, 2] @ [[1, 0], [0, 1], [1, 1]]^T + [0, 0, -1] = [1, 2, 2]; + residual
    # [0, 0, 1] = [1, 2, 3]: LayerNorm -> [-sqrt(1.5), 0, sqrt(1.5)], then * weight + bias.
    s = math.sqrt(1.5)
    out = call(backend, "linear_add_layer_norm", np.float32([[1.0, 2.0]]), np.float32([[1, 0], [0, 1], [1, 1]]),
               np.float32([0, 0, -1]), np.float32([[0.0, 0.0, 1.0]]), np.float32([1.0, 2.0, 3.0]),
               np.float32([0.0, 1.0, 0.0]), 0.0)
    assert_close(out, [[-s, 1.0, 3 * s]], atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@given(b=tiny_sizes, T=small_sizes, k=small_sizes, h=small_sizes, eps=st.sampled_from([1e-12, 1e-5]), data=st.data())
def test_linear_add_layer_norm_matches_torch(backend, b, T, k, h, eps, data):
    """LayerNorm(x W^T + b + residual): how each BERT sublayer ends (transformers' BertSelfOutput)."""
    x = data.draw(float_arrays((b, T, k)), label="x")
    residual = data.draw(float_arrays((b, T, h), scale=3.0), label="residual")  # non-centred rows
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    weight, bias = randn(rng, h, k, scale=k ** -0.5), randn(rng, h)
    norm_weight, norm_bias = _layer_norm_params(rng, h)
    expected = F.layer_norm(F.linear(t(x), t(weight), t(bias)) + t(residual), (h,), t(norm_weight), t(norm_bias), eps)
    assert_close(call(backend, "linear_add_layer_norm", x, weight, bias, residual, norm_weight, norm_bias, eps),
                 expected, **F32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_norm_large_mean(backend):
    # Two-pass variance: E[(x - mean)^2] stays accurate where E[x^2] - E[x]^2 would cancel.
    # Inputs with mean 300 and spread 1: float32 ulp at 300 is 3e-5, so the normalised output
    # can be trusted to ~1e-4 against an exact float64 computation; the one-pass formula is off
    # by ~1e-2 here.
    x = (300 + np.random.default_rng(0).standard_normal((4, 768))).astype(np.float32)
    ones, zeros = np.ones(768, np.float32), np.zeros(768, np.float32)
    x64 = x.astype(np.float64)
    exact = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-12)
    assert_close(call(backend, "layer_norm", x, ones, zeros, 1e-12), exact, atol=2e-4, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_hand_case(backend):
    x = np.array([[1.0, 2.0]], np.float32)
    w = np.array([[1.0, 0.0], [0.5, -1.0], [2.0, 3.0]], np.float32)  # [out=3, in=2], torch's layout
    b = np.array([0.0, 1.0, -1.0], np.float32)
    assert_close(call(backend, "linear", x, w, b), [[1.0, -0.5, 7.0]], atol=0, rtol=0)
    assert_close(call(backend, "linear", x, w, b, "relu"), [[1.0, 0.0, 7.0]], atol=0, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@given(b=tiny_sizes, n=small_sizes, k=small_sizes, m=small_sizes, has_bias=st.booleans(),
       activation=st.sampled_from([None, *contract.ACTIVATION_NAMES]), seed=seeds)
def test_linear_matches_torch(backend, b, n, k, m, has_bias, activation, seed):
    rng = np.random.default_rng(seed)
    x, w = randn(rng, b, n, k), randn(rng, m, k)
    bias = randn(rng, m) if has_bias else None
    expected = F.linear(t(x), t(w), None if bias is None else t(bias))
    if activation is not None:
        expected = TORCH_ACTIVATIONS[activation](expected)
    assert_close(call(backend, "linear", x, w, bias, activation), expected, **F32, name=f"linear, {activation}")


def _linears(backend, x, weights, biases):
    """ops.linears through ops.prepare_linears, NumPy in and out (the prepared form is the backend's)."""
    ops = backend_ops(backend)
    prepared = ops.prepare_linears(tuple(map(ops.from_numpy, weights)), tuple(map(ops.from_numpy, biases)))
    return tuple(ops.to_numpy(y) for y in ops.linears(ops.from_numpy(x), prepared))


@pytest.mark.parametrize("backend", BACKENDS)
def test_linears_hand_case(backend):
    # Two projections of x = [1, 2]: W1 = [[1, 0], [0, 1]] + [10, 20] -> [11, 22]; W2 = [[1, 1]] + [-3] -> [0].
    x = np.array([[1.0, 2.0]], np.float32)
    y1, y2 = _linears(backend, x, [np.eye(2, dtype=np.float32), np.ones((1, 2), np.float32)],
                      [np.float32([10, 20]), np.float32([-3])])
    assert_close(y1, [[11.0, 22.0]], atol=0, rtol=0)
    assert_close(y2, [[0.0]], atol=0, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@given(b=tiny_sizes, n=small_sizes, k=small_sizes, widths=st.lists(small_sizes, min_size=1, max_size=3), seed=seeds)
def test_linears_match_torch(backend, b, n, k, widths, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, b, n, k)
    weights, biases = [randn(rng, m, k) for m in widths], [randn(rng, m) for m in widths]
    got = _linears(backend, x, weights, biases)
    assert len(got) == len(widths)
    for i, (y, w, bias) in enumerate(zip(got, weights, biases)):
        assert_close(y, F.linear(t(x), t(w), t(bias)), **F32, name=f"linears output {i}")


def torch_multi_head_attention(q, k, v, attention_mask, num_heads):
    # [B, T, H] x 3, [B, T] -> ([B, T, H], [B, heads, T, T])
    """transformers' eager attention: softmax(q k^T / sqrt(d) + bias) v per head, with the
    additive bias 0 for a real key and float32's minimum for a padded one."""
    B, T, H = q.shape

    def split(y):  # [B, T, H] -> [B, heads, T, d]
        return y.view(B, T, num_heads, H // num_heads).transpose(1, 2)

    bias = torch.where(attention_mask[:, None, None, :] != 0, 0.0, torch.finfo(torch.float32).min)
    probs = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(H // num_heads) + bias, -1)
    return (probs @ split(v)).transpose(1, 2).reshape(B, T, H), probs


def _supports_probs(backend: str) -> bool:
    return backend != "triton"  # the fused kernel never stores P (see the refusal test below)


@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_head_attention_hand_case(backend):
    # One head of d = 16 (the Triton kernel's smallest), q = 0: every score is 0, so each query
    # averages the values of the real keys, 2 and 4 -> 3. The padded key's value is huge: any
    # weight on it would show; it gets exactly 0.
    q = k = np.zeros((1, 3, 16), np.float32)
    v = np.repeat(np.float32([2.0, 4.0, 1e6])[None, :, None], 16, axis=2)
    mask = np.array([[1, 1, 0]])
    out, probs = call(backend, "multi_head_attention", q, k, v, mask, 1, return_probs=_supports_probs(backend))
    np.testing.assert_array_equal(out, np.full((1, 3, 16), 3.0, np.float32))
    if _supports_probs(backend):
        np.testing.assert_array_equal(probs, np.tile(np.float32([0.5, 0.5, 0.0]), (1, 1, 3, 1)))


@pytest.mark.parametrize("backend", BACKENDS)
@given(b=tiny_sizes, heads=tiny_sizes, T=small_sizes, data=st.data())
def test_multi_head_attention_matches_torch(backend, b, heads, T, data):
    # Head dims: 1 and odd sizes for NumPy; the kernel takes powers of two from 16 to 128.
    d = data.draw(st.sampled_from([16, 32] if backend == "triton" else [1, 3, 8, 16, 64]), label="d")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    q, k, v = (randn(rng, b, T, heads * d, scale=2.0) for _ in range(3))
    lengths = rng.integers(0, T + 1, b)  # 0 = a fully padded row: a uniform softmax, never NaN
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    out, probs = call(backend, "multi_head_attention", q, k, v, mask, heads, return_probs=_supports_probs(backend))
    ref_out, ref_probs = torch_multi_head_attention(t(q), t(k), t(v), t(mask), heads)
    assert_close(out, ref_out, **F32, name="attention output")
    assert not np.isnan(out).any()
    if _supports_probs(backend):
        assert_close(probs, ref_probs, **F32, name="probs")
        # Where a row has real keys, the padded ones get exactly zero weight.
        padded = np.broadcast_to((mask == 0)[:, None, None, :], probs.shape)
        has_keys = np.broadcast_to((lengths > 0)[:, None, None, None], probs.shape)
        assert (probs[padded & has_keys] == 0).all()
    if (lengths > 0).all():  # SDPA's rows without any key are not comparable (NaN)
        split = lambda y: t(y).view(b, T, heads, d).transpose(1, 2)  # noqa: E731
        sdpa = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=t(mask)[:, None, None, :].bool())
        assert_close(out, sdpa.transpose(1, 2).reshape(b, T, heads * d), **F32, name="attention vs SDPA")
    assert call(backend, "multi_head_attention", q, k, v, mask, heads)[1] is None  # no probs unless asked


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_attention_hand_case(backend):
    # Two sequences of one head (d = 16), q = 0: each query averages the values of its own
    # sequence only: rows 0-1 (values 2, 4) -> 3; row 2 alone (value 1e6) -> 1e6.
    q = k = np.zeros((3, 16), np.float32)
    v = np.repeat(np.float32([2.0, 4.0, 1e6])[:, None], 16, axis=1)
    out = call(backend, "packed_attention", q, k, v, np.int32([0, 2, 3]), 2, 1)
    np.testing.assert_array_equal(out, np.repeat(np.float32([3.0, 3.0, 1e6])[:, None], 16, axis=1))


@pytest.mark.parametrize("backend", BACKENDS)
@given(heads=tiny_sizes, lengths=st.lists(st.integers(1, 13), min_size=1, max_size=4), data=st.data())
def test_packed_attention_matches_torch_per_sequence(backend, heads, lengths, data):
    d = data.draw(st.sampled_from([16, 32] if backend == "triton" else [1, 3, 16]), label="d")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    N = sum(lengths)
    q, k, v = (randn(rng, N, heads * d, scale=2.0) for _ in range(3))
    cu_seqlens = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    out = call(backend, "packed_attention", q, k, v, cu_seqlens, max(lengths), heads)
    for b, (start, end) in enumerate(zip(cu_seqlens[:-1], cu_seqlens[1:])):
        seq = lambda y: t(y[None, start:end])  # noqa: E731  [1, L, H]
        expected, _ = torch_multi_head_attention(seq(q), seq(k), seq(v), torch.ones(1, end - start), heads)
        assert_close(out[start:end], expected[0], **F32, name=f"sequence {b}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_scatter_rows_hand_case(backend):
    x = np.float32([[1, 2], [3, 4]])
    out = call(backend, "scatter_rows", x, np.array([3, 0]), 4)
    np.testing.assert_array_equal(out, np.float32([[3, 4], [0, 0], [0, 0], [1, 2]]))


# ----------------------------------------------------------------------------------------------
# vision ops (channels-last in, NCHW torch reference)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_hand_case(backend):
    # 1 channel, 3x3 input 1..9, a 2x2 kernel of ones, no padding: each output sums a 2x2 window.
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    out = call(backend, "conv2d", x, np.ones((1, 1, 2, 2), np.float32))
    np.testing.assert_array_equal(out[0, :, :, 0], [[1 + 2 + 4 + 5, 2 + 3 + 5 + 6], [4 + 5 + 7 + 8, 5 + 6 + 8 + 9]])


@pytest.mark.parametrize("backend", BACKENDS)
@given(b=st.sampled_from([1, 2]), cin=st.sampled_from([1, 3]), cout=st.sampled_from([1, 4, 7]),
       k=st.sampled_from([1, 3]),
       stride=st.sampled_from([1, 2]), padding=st.sampled_from([(0, 1, 0, 1), (1, 1, 1, 1), (0, 0, 0, 0)]),
       fused=st.booleans(), data=st.data())
def test_conv2d_matches_torch(backend, b, cin, cout, k, stride, padding, fused, data):
    """The dense stem conv: its right/bottom padding, symmetric padding or none; plain, or with
    its fused bias + SiLU."""
    top, bottom, left, right = padding
    h = data.draw(st.integers(max(1, k - top - bottom), 11), label="h")  # the kernel fits the padded input
    w = data.draw(st.integers(max(1, k - left - right), 11), label="w")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    x, weight, bias = randn(rng, b, h, w, cin), randn(rng, cout, cin, k, k), randn(rng, cout)
    expected = F.conv2d(F.pad(nchw(x), (left, right, top, bottom)), t(weight), stride=stride)
    if fused:
        expected = F.silu(expected + t(bias)[:, None, None])
    out = call(backend, "conv2d", x, weight, stride, padding, **(dict(bias=bias, activation="silu") if fused else {}))
    assert_close(out, nhwc(expected), **F32, name=f"conv2d, fused={fused}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_pointwise_conv_hand_case(backend):
    # One pixel, x = [1, 2], W = [[1, 1], [1, -1]], bias [0, 1]: x W^T + b = [3, 0].
    # With the gate [0.5, 2]: x * gate = [0.5, 4] -> [4.5, -2.5]; then + residual [10, 10].
    x = np.float32([1.0, 2.0]).reshape(1, 1, 1, 2)
    weight = np.float32([[1.0, 1.0], [1.0, -1.0]]).reshape(2, 2, 1, 1)
    bias = np.float32([0.0, 1.0])
    np.testing.assert_array_equal(call(backend, "pointwise_conv", x, weight, bias).ravel(), [3.0, 0.0])
    out = call(backend, "pointwise_conv", x, weight, bias, input_scale=np.float32([[0.5, 2.0]]),
               residual=np.full((1, 1, 1, 2), 10.0, np.float32))
    np.testing.assert_array_equal(out.ravel(), [14.5, 7.5])


@pytest.mark.parametrize("backend", BACKENDS)
@given(b=st.sampled_from([1, 3]), cin=small_sizes, cout=small_sizes, h=tiny_sizes, w=tiny_sizes, has_bias=st.booleans(),
       activation=st.sampled_from(contract.CONV_ACTIVATIONS), gated=st.booleans(), has_residual=st.booleans(),
       seed=seeds)
def test_pointwise_conv_matches_torch(backend, b, cin, cout, h, w, has_bias, activation, gated, has_residual, seed):
    """A 1x1 conv with each part of its epilogue on or off; all on is an MBConv block's
    projection: conv(x * gate) + bias + residual, one gate factor per image and input channel."""
    rng = np.random.default_rng(seed)
    x, weight = randn(rng, b, h, w, cin), randn(rng, cout, cin, 1, 1)
    bias = randn(rng, cout) if has_bias else None
    gate = rng.uniform(0, 1, (b, cin)).astype(np.float32) if gated else None
    residual = randn(rng, b, h, w, cout) if has_residual else None
    xt = nchw(x) if gate is None else nchw(x) * t(gate)[:, :, None, None]
    expected = F.conv2d(xt, t(weight), None if bias is None else t(bias))
    if activation is not None:
        expected = TORCH_ACTIVATIONS[activation](expected)
    if residual is not None:
        expected = expected + nchw(residual)
    out = call(backend, "pointwise_conv", x, weight, bias, activation=activation, input_scale=gate, residual=residual)
    assert_close(out, nhwc(expected), **F32, name="pointwise conv")


@pytest.mark.parametrize("backend", BACKENDS)
def test_depthwise_conv2d_hand_case(backend):
    # 1 channel, 3x3 input 1..9, 3x3 kernel of ones, same padding: each output is the sum of its
    # 3x3 neighbourhood; the centre sees all nine values 1..9 = 45, a corner sees four.
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    w = np.ones((1, 1, 3, 3), np.float32)
    out = call(backend, "depthwise_conv2d", x, w, 1, (1, 1, 1, 1))
    assert out[0, 1, 1, 0] == 45.0 and out[0, 0, 0, 0] == 1 + 2 + 4 + 5
    # With bias -45 the centre's z = 0 and silu(0) = 0; a corner's 12 becomes -33, silu(-33) ~
    # -1.5e-13. The means are those of the nine outputs.
    out, means = call(backend, "depthwise_conv2d", x, w, 1, (1, 1, 1, 1), bias=np.float32([-45]), activation="silu",
                      return_means=True)
    assert out[0, 1, 1, 0] == 0.0
    assert_close(out[0, 0, 0, 0], -33 / (1 + math.exp(33)), atol=0, rtol=F32["rtol"])
    assert_close(means, out.mean(axis=(1, 2)), atol=0, rtol=1e-6)


def _depthwise_case(draw):
    """Every kernel size and stride of the vision tower, both stride-2 paddings, odd and even
    sizes, and an input the padded kernel fits."""
    k, stride, adjust = draw(st.sampled_from([3, 5])), draw(st.sampled_from([1, 2])), draw(st.booleans())
    top, bottom, left, right = padding = depthwise_padding(k, stride, adjust)
    h = draw(st.integers(max(1, k - top - bottom), 12), label="h")
    w = draw(st.integers(max(1, k - left - right), 12), label="w")
    return k, stride, padding, h, w


@pytest.mark.parametrize("backend", BACKENDS)
@given(b=st.sampled_from([1, 2]), c=st.sampled_from([1, 3, 8]), has_bias=st.booleans(),
       activation=st.sampled_from(contract.CONV_ACTIVATIONS), data=st.data())
def test_depthwise_conv2d_matches_torch(backend, b, c, has_bias, activation, data):
    k, stride, padding, h, w = _depthwise_case(data.draw)
    top, bottom, left, right = padding
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    x, weight = randn(rng, b, h, w, c), randn(rng, c, 1, k, k)
    bias = randn(rng, c) if has_bias else None
    expected = F.conv2d(F.pad(nchw(x), (left, right, top, bottom)), t(weight), None if bias is None else t(bias),
                        stride=stride, groups=c)  # groups = C: each channel its own filter
    if activation is not None:
        expected = TORCH_ACTIVATIONS[activation](expected)
    out = call(backend, "depthwise_conv2d", x, weight, stride, padding, bias=bias, activation=activation)
    assert_close(out, nhwc(expected), **F32, name="depthwise")
    out, means = call(backend, "depthwise_conv2d", x, weight, stride, padding, bias=bias, activation=activation,
                      return_means=True)
    assert_close(out, nhwc(expected), **F32, name="depthwise, return_means")
    assert means.dtype == np.float32
    assert_close(means, expected.mean(dim=(2, 3)), **F32, name="means")


@pytest.mark.parametrize("backend", BACKENDS)
@given(b=st.sampled_from([1, 2]), c=st.sampled_from([1, 3, 8]), eps=st.sampled_from([1e-3, 1e-5]), data=st.data())
def test_depthwise_stage_with_folded_batch_norm_matches_torch(backend, b, c, eps, data):
    """The depthwise stage of an MBConv block as the vision tower runs it -- batchnorm folded into
    the weights, bias + SiLU fused, the squeeze-excitation means returned -- against torch's
    conv -> batch_norm -> silu and the mean over space."""
    k, stride, padding, h, w = _depthwise_case(data.draw)
    top, bottom, left, right = padding
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    x, weight = randn(rng, b, h, w, c), randn(rng, c, 1, k, k)
    bn_weight, bn_bias, mean = randn(rng, c), randn(rng, c), randn(rng, c)
    var = rng.uniform(0.1, 3, c).astype(np.float32)
    conv = F.conv2d(F.pad(nchw(x), (left, right, top, bottom)), t(weight), stride=stride, groups=c)
    expected = F.silu(F.batch_norm(conv, t(mean), t(var), t(bn_weight), t(bn_bias), training=False, eps=eps))
    folded, shift = reference.fold_batch_norm(weight, bn_weight, bn_bias, mean, var, eps)
    out, means = call(backend, "depthwise_conv2d", x, folded, stride, padding, bias=shift, activation="silu",
                      return_means=True)
    assert_close(out, nhwc(expected), **F32, name="depthwise + BN + SiLU")
    assert_close(means, expected.mean(dim=(2, 3)), **F32, name="SE means")


@pytest.mark.parametrize("backend", BACKENDS)
def test_squeeze_excite_gate_hand_case(backend):
    # One channel, S = 1, mean 2: hidden = silu(1 * 2 + 0) = 2 / (1 + e^-2); the expansion's bias
    # is minus that, so the gate is sigmoid(0) = 0.5. A mean of 0: silu(0) = 0, sigmoid(-hidden).
    hidden = 2 / (1 + math.exp(-2))
    one = np.ones((1, 1, 1, 1), np.float32)
    gate = call(backend, "squeeze_excite_gate", np.float32([[2.0], [0.0]]), one, np.float32([0.0]), one,
                np.float32([-hidden]))
    assert_close(gate, [[0.5], [1 / (1 + math.exp(hidden))]], atol=1e-7, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@given(b=tiny_sizes, c=small_sizes, s=st.sampled_from([1, 2, 5]), activation=st.sampled_from(contract.ACTIVATION_NAMES),
       seed=seeds)
def test_squeeze_excite_gate_matches_torch(backend, b, c, s, activation, seed):
    rng = np.random.default_rng(seed)
    pooled = randn(rng, b, c, scale=2.0)
    w_r, b_r, w_e, b_e = randn(rng, s, c, 1, 1), randn(rng, s), randn(rng, c, s, 1, 1), randn(rng, c)
    hidden = TORCH_ACTIVATIONS[activation](F.linear(t(pooled), t(w_r[:, :, 0, 0]), t(b_r)))  # [B, S]
    expected = torch.sigmoid(F.linear(hidden, t(w_e[:, :, 0, 0]), t(b_e)))
    gate = call(backend, "squeeze_excite_gate", pooled, w_r, b_r, w_e, b_e, activation=activation)
    assert_close(gate, expected, **F32)
    assert ((gate >= 0) & (gate <= 1)).all()


@pytest.mark.parametrize("backend", BACKENDS)
@given(c=st.sampled_from([1, 4, 12]), se=st.sampled_from([1, 3]), act=st.sampled_from(["swish", "gelu", "relu6"]),
       seed=seeds)
def test_squeeze_excite_matches_transformers_layer(backend, c, se, act, seed):
    """The whole squeeze-excitation as the vision tower computes it -- the means, the gate op,
    the product -- against transformers' AlignVisionSqueezeExciteLayer with random weights, whose
    reduce activation is the config's hidden_act."""
    from transformers import AlignVisionConfig
    from transformers.models.align.modeling_align import AlignVisionSqueezeExciteLayer

    from reference import randomize_

    config = AlignVisionConfig(squeeze_expansion_ratio=se / c, hidden_act=act)
    module = randomize_(AlignVisionSqueezeExciteLayer(config, in_dim=c, expand_dim=c), seed=seed % 1000)
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, c, 5, 6)).astype(np.float32))
    with torch.no_grad():
        expected = nhwc(module(x))
    p = {k: v.numpy() for k, v in module.state_dict().items()}
    weights = p["reduce.weight"], p["reduce.bias"], p["expand.weight"], p["expand.bias"]
    gate = call(backend, "squeeze_excite_gate", nhwc(x).mean(axis=(1, 2)), *weights, activation=act)
    assert_close(nhwc(x) * gate[:, None, None, :], expected, **F32)
    if backend == "reference":  # and the reference's one-function spelling of the same
        assert_close(reference.squeeze_excite(nhwc(x), *weights, activation=act), expected, **F32,
                     name="reference.squeeze_excite")


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_pool_hand_case(backend):
    # A 2x2 map [[1, 2], [3, 6]]: mean 3, max 6.
    x = np.float32([[1.0, 2.0], [3.0, 6.0]]).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(call(backend, "global_pool", x, "mean"), [[3.0]])
    np.testing.assert_array_equal(call(backend, "global_pool", x, "max"), [[6.0]])


@pytest.mark.parametrize("backend", BACKENDS)
@given(kind=st.sampled_from(["mean", "max"]), h=st.integers(1, 9), seed=seeds)
def test_global_pool_matches_transformers_pooler(backend, kind, h, seed):
    # transformers pools with AvgPool2d/MaxPool2d(kernel=hidden_dim, ceil_mode=True): one window
    # that covers the whole (smaller) map, i.e. a plain mean / max over space.
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, 4, h, h + 1)).astype(np.float32))
    pool = torch.nn.AvgPool2d(2560, ceil_mode=True) if kind == "mean" else torch.nn.MaxPool2d(2560, ceil_mode=True)
    pooled = call(backend, "global_pool", nhwc(x), kind)
    assert pooled.dtype == np.float32
    assert_close(pooled, pool(x)[:, :, 0, 0], **F32)


# ----------------------------------------------------------------------------------------------
# bad arguments: clear errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_names_the_accepted_activations(backend):
    x, w = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
    message = f"activation 'gelu_2' is not supported; use one of {sorted(contract.ACTIVATION_NAMES)} or None"
    with pytest.raises(ValueError, match=re.escape(message)):
        call(backend, "linear", x, w, None, "gelu_2")
    with pytest.raises(ValueError, match=re.escape("activation 'prelu' is not supported (it has learned weights")):
        call(backend, "linear", x, w, None, "prelu")


CONV_CALLS = {  # op -> (arguments, on a [1, 5, 5, 2] input), each with its weight
    "conv2d": lambda x: (x, np.ones((3, 2, 3, 3), np.float32)),
    "pointwise_conv": lambda x: (x, np.ones((3, 2, 1, 1), np.float32)),
    "depthwise_conv2d": lambda x: (x, np.ones((2, 1, 3, 3), np.float32)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(CONV_CALLS))
def test_convolutions_name_the_accepted_activations(backend, op):
    """A convolution's epilogue takes every activation name or nothing (contract.CONV_ACTIVATIONS);
    any other name is refused rather than silently computed or ignored."""
    args = CONV_CALLS[op](np.ones((1, 5, 5, 2), np.float32))
    message = f"activation 'Swish' is not supported; use one of {sorted(contract.ACTIVATION_NAMES)} or None"
    with pytest.raises(ValueError, match=re.escape(message)):
        call(backend, op, *args, activation="Swish")


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_pool_names_the_accepted_kinds(backend):
    with pytest.raises(ValueError, match=re.escape("kind must be 'mean' or 'max', got 'avg'")):
        call(backend, "global_pool", np.ones((1, 2, 2, 3), np.float32), "avg")


def test_triton_attention_refuses_to_return_probabilities():
    pytest.importorskip("triton", reason="the triton backend needs the triton package (the dev extra installs it)")
    q = np.zeros((1, 3, 16), np.float32)
    with pytest.raises(ValueError, match="never stores the attention probabilities"):
        call("triton", "multi_head_attention", q, q, q, np.ones((1, 3), np.int64), 1, return_probs=True)


def test_check_activation_names_what_it_accepts():
    contract.check_activation(None)
    contract.check_activation("gelu_new")
    with pytest.raises(ValueError, match=re.escape("activation None is not supported; use one of ['silu']") + "$"):
        contract.check_activation(None, ("silu",), none_ok=False)


# ----------------------------------------------------------------------------------------------
# the fast NumPy backend computes what the reference computes
# ----------------------------------------------------------------------------------------------

# The ops the numpy backend re-implements for speed; every other op is the reference's function.
SPED_UP = {"linear", "linears", "linear_add_layer_norm", "conv2d", "pointwise_conv", "depthwise_conv2d"}


def test_numpy_backend_reuses_the_reference_where_it_is_not_faster():
    own = {name for name in contract.OP_NAMES if getattr(numpy_backend, name) is not getattr(reference, name)}
    assert own == SPED_UP


def _sped_up_case(op: str, draw, rng):
    """Arguments for one sped-up op, with every option the architecture uses drawn."""
    b, h, w, c = draw(tiny_sizes), draw(small_sizes), draw(small_sizes), draw(small_sizes)
    h, w = max(h, 2), max(w, 2)  # the stem's 3x3 kernel fits h + 1 rows (its padding, (0, 1, 0, 1))
    if op == "linear":
        return (randn(rng, b, h, c), randn(rng, w, c), randn(rng, w)), \
            dict(activation=draw(st.sampled_from([None, *contract.ACTIVATION_NAMES])))
    if op == "linear_add_layer_norm":  # BERT's sublayer output: LayerNorm(x W^T + b + residual)
        return (randn(rng, b, h, c), randn(rng, w, c), randn(rng, w), randn(rng, b, h, w),
                rng.uniform(0.5, 1.5, w).astype(np.float32), randn(rng, w), 1e-12), {}
    if op == "linears":  # three projections of one input, of different widths
        prepared = reference.prepare_linears([randn(rng, n, c) for n in (w, h, 2)], [randn(rng, n) for n in (w, h, 2)])
        return (randn(rng, b, h, c), prepared), {}
    fused = dict(bias=randn(rng, c), activation=draw(st.sampled_from(contract.ACTIVATION_NAMES))) \
        if draw(st.booleans()) else {}
    if op == "conv2d":
        padding = draw(st.sampled_from([(0, 1, 0, 1), (1, 1, 1, 1)]))
        return (randn(rng, b, h, w, 3), randn(rng, c, 3, 3, 3), draw(st.sampled_from([1, 2])), padding), fused
    if op == "pointwise_conv":
        cout = draw(small_sizes)
        fused = dict(bias=randn(rng, cout), activation=draw(st.sampled_from(contract.CONV_ACTIVATIONS)),
                     input_scale=rng.uniform(0, 1, (b, c)).astype(np.float32), residual=randn(rng, b, h, w, cout))
        return (randn(rng, b, h, w, c), randn(rng, cout, c, 1, 1)), fused
    k, stride, padding, h, w = _depthwise_case(draw)
    return (randn(rng, b, h, w, c), randn(rng, c, 1, k, k), stride, padding), {**fused, "return_means": True}


@pytest.mark.parametrize("op", sorted(SPED_UP))
@given(data=st.data())
def test_numpy_backend_equals_the_reference(op, data):
    args, kwargs = _sped_up_case(op, data.draw, np.random.default_rng(data.draw(seeds, label="seed")))
    fast, plain = getattr(numpy_backend, op)(*args, **kwargs), getattr(reference, op)(*args, **kwargs)
    if op not in ("depthwise_conv2d", "linears"):  # which return tuples (with return_means=True, the means)
        fast, plain = (fast,), (plain,)
    for i, (a, e) in enumerate(zip(fast, plain, strict=True)):
        assert a.dtype == e.dtype == np.float32
        assert_close(a, e, **F32, name=f"{op} output {i}")


@given(x=float_arrays((3, 17), scale=4.0), padding=st.tuples(*[st.integers(0, 2)] * 4))
def test_numpy_backend_elementwise_helpers_equal_the_reference(x, padding):
    assert_close(numpy_backend.erf(x), reference.erf(x), atol=2.5e-7, rtol=0, name="erf")
    assert_close(numpy_backend.gelu(x), reference.gelu(x), **F32, name="gelu")
    image = x.reshape(1, 3, 17, 1)
    np.testing.assert_array_equal(numpy_backend.pad_hw(image, padding), reference.pad_hw(image, padding))


# ----------------------------------------------------------------------------------------------
# the reference's helpers: softmax, attention, batchnorm (not ops, but what ops are made of)
# ----------------------------------------------------------------------------------------------


@given(x=float_arrays((2, 3, 11), scale=30.0))
def test_softmax_matches_torch(x):
    out = reference.softmax(x)
    assert_close(out, torch.softmax(t(x), -1), **F32)
    assert_close(out.sum(-1), np.ones((2, 3)), atol=1e-6, rtol=0)


def test_attention_hand_case():
    # One head, two real keys with equal scores -> the output is the mean of their values; the
    # padded key gets exactly zero weight.
    q = np.zeros((1, 1, 1, 2), np.float32)
    k = np.array([[[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]]], np.float32)
    v = np.array([[[[2.0, 0.0], [0.0, 4.0], [100.0, 100.0]]]], np.float32)
    out, probs = reference.attention(q, k, v, reference.attention_bias(np.array([[1, 1, 0]])))
    assert_close(probs, [[[[0.5, 0.5, 0.0]]]], atol=0, rtol=0)
    assert_close(out, [[[[1.0, 2.0]]]], atol=1e-7, rtol=0)


@given(c=small_sizes, eps=st.sampled_from([1e-3, 1e-5]), seed=seeds)
def test_batch_norm_matches_torch(c, eps, seed):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((2, c, 4, 3)).astype(np.float32) * 3 + 1)
    weight, bias, mean = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.1, 3, c).astype(np.float32)
    expected = F.batch_norm(x, t(mean), t(var), t(weight), t(bias), training=False, eps=eps)
    assert_close(reference.batch_norm(nhwc(x), weight, bias, mean, var, eps), nhwc(expected), **F32)


@pytest.mark.parametrize("backend", BACKENDS)
@given(c=small_sizes, eps=st.sampled_from([1e-3, 1e-5]), seed=seeds)
def test_fold_batch_norm_matches_conv_then_batch_norm_in_torch(backend, c, eps, seed):
    """fold_batch_norm prepares the weights once (in NumPy, for every backend); the folded conv is
    the stem's conv2d with a bias."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((2, 3, 6, 5)).astype(np.float32))
    conv_weight = rng.standard_normal((c, 3, 3, 3)).astype(np.float32)
    weight, bias, mean = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.1, 3, c).astype(np.float32)
    expected = F.batch_norm(F.conv2d(x, t(conv_weight)), t(mean), t(var), t(weight), t(bias), training=False, eps=eps)
    folded, shift = reference.fold_batch_norm(conv_weight, weight, bias, mean, var, eps)
    assert folded.dtype == shift.dtype == np.float32
    assert_close(call(backend, "conv2d", nhwc(x), folded, bias=shift), nhwc(expected), **F32, name="folded conv")


def test_tap_and_conv_output_size():
    # A 5x5 input, 3x3 kernel, stride 2: (5 - 3) // 2 + 1 = 2 outputs per axis; tap (i, j) of
    # output (y, x) is input (2y + i, 2x + j).
    assert reference.conv_output_size(5, 3, 2) == 2 and reference.conv_output_size(289, 3, 2) == 144
    x = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    np.testing.assert_array_equal(reference.tap(x, 1, 2, 2, 2, 2)[0, :, :, 0], [[7, 9], [17, 19]])
