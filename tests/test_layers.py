"""Each NumPy layer against torch: one hand-computed case first, then hypothesis shapes and values."""

import math
import os
import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from helpers import TOLERANCES, assert_close
from minialign import layers
from strategies import float_arrays, small_sizes, tiny_sizes

F32 = TOLERANCES["float32"]
t = torch.from_numpy


# -- erf and the activations -----------------------------------------------------------------


def test_erf_hand_values():
    # erf(0) = 0, erf is odd, erf(inf) = 1; erf(1) = 0.8427007929497149 (tables).
    x = np.array([0.0, 1.0, -1.0, np.inf, -np.inf], np.float32)
    assert_close(layers.erf(x), [0.0, 0.8427007929497149, -0.8427007929497149, 1.0, -1.0], atol=1e-7, rtol=0)


def test_erf_is_float32_accurate_on_a_dense_grid():
    # Dense grid over the whole interesting range, plus tiny arguments where relative accuracy
    # is what matters (erf(x) ~ 1.128 x). Few float32 ulps: abs <= 2.5e-7, rel <= 5e-7.
    x = np.concatenate([np.linspace(-6, 6, 120_001), np.geomspace(1e-30, 0.5, 2000)]).astype(np.float32)
    exact = np.array([math.erf(float(v)) for v in x])
    got = layers.erf(x).astype(np.float64)
    assert np.abs(got - exact).max() <= 2.5e-7
    nonzero = exact != 0
    assert (np.abs(got - exact)[nonzero] / np.abs(exact[nonzero])).max() <= 5e-7
    assert_close(layers.erf(x), torch.erf(t(x)), atol=2.5e-7, rtol=0, name="erf vs torch")


def test_activations_hand_values():
    x = np.array([-1.0, 0.0, 2.0], np.float32)
    assert_close(layers.relu(x), [0.0, 0.0, 2.0], atol=0, rtol=0)
    assert_close(layers.silu(x), [-1 / (1 + math.e), 0.0, 2 / (1 + math.exp(-2))], atol=1e-7, rtol=1e-6)
    assert_close(layers.gelu(x), [-0.15865525393145707, 0.0, 1.9544997361036416], atol=1e-7, rtol=1e-6)


@given(x=float_arrays((7, 13), scale=4.0))
def test_activations_match_torch(x):
    assert_close(layers.gelu(x), F.gelu(t(x)), **F32, name="gelu")
    assert_close(layers.gelu_new(x), F.gelu(t(x), approximate="tanh"), **F32, name="gelu_new")
    assert_close(layers.relu(x), F.relu(t(x)), atol=0, rtol=0, name="relu")
    assert_close(layers.silu(x), F.silu(t(x)), **F32, name="silu")
    assert_close(layers.sigmoid(x), torch.sigmoid(t(x)), **F32, name="sigmoid")
    assert layers.gelu(x).dtype == np.float32


def test_sigmoid_and_silu_saturate_without_warnings():
    x = np.array([-1000.0, -90.0, 90.0, 1000.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow RuntimeWarning would fail the test
        assert_close(layers.sigmoid(x), [0.0, 0.0, 1.0, 1.0], atol=1e-38, rtol=0)
        assert_close(layers.silu(x), [0.0, 0.0, 90.0, 1000.0], atol=1e-35, rtol=0)


# -- linear, layer norm, embedding, softmax ---------------------------------------------------


def test_linear_hand_case():
    x = np.array([[1.0, 2.0]], np.float32)
    w = np.array([[1.0, 0.0], [0.5, -1.0], [2.0, 3.0]], np.float32)  # [out=3, in=2]
    b = np.array([0.0, 1.0, -1.0], np.float32)
    assert_close(layers.linear(x, w, b), [[1.0, -0.5, 7.0]], atol=0, rtol=0)


@given(b=tiny_sizes, n=small_sizes, k=small_sizes, m=small_sizes, seed=st.integers(0, 2**31), bias=st.booleans())
def test_linear_matches_torch(b, n, k, m, seed, bias):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, n, k)).astype(np.float32)
    w = rng.standard_normal((m, k)).astype(np.float32)
    bb = rng.standard_normal(m).astype(np.float32) if bias else None
    expected = F.linear(t(x), t(w), t(bb) if bias else None)
    assert_close(layers.linear(x, w, bb), expected, **F32)


def test_layer_norm_hand_case():
    x = np.array([[1.0, 2.0, 3.0]], np.float32)  # mean 2, var 2/3
    out = layers.layer_norm(x, np.ones(3, np.float32), np.zeros(3, np.float32), eps=0.0)
    s = math.sqrt(1.5)
    assert_close(out, [[-s, 0.0, s]], atol=1e-6, rtol=0)


@given(x=float_arrays((3, 5, 17), scale=5.0), eps=st.sampled_from([1e-12, 1e-5, 1e-3]), seed=st.integers(0, 2**31))
def test_layer_norm_matches_torch(x, eps, seed):
    rng = np.random.default_rng(seed)
    w = (1 + 0.3 * rng.standard_normal(17)).astype(np.float32)
    b = rng.standard_normal(17).astype(np.float32)
    assert_close(layers.layer_norm(x, w, b, eps), F.layer_norm(t(x), (17,), t(w), t(b), eps), **F32)


def test_layer_norm_large_mean():
    # Two-pass variance: E[(x - mean)^2] stays accurate where E[x^2] - E[x]^2 would cancel.
    # Inputs with mean 300 and spread 1: float32 ulp at 300 is 3e-5, so the normalised output
    # can be trusted to ~1e-4 against an exact float64 computation; the one-pass formula is off
    # by ~1e-2 here.
    x = (300 + np.random.default_rng(0).standard_normal((4, 768))).astype(np.float32)
    ones, zeros = np.ones(768, np.float32), np.zeros(768, np.float32)
    x64 = x.astype(np.float64)
    exact = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-12)
    assert_close(layers.layer_norm(x, ones, zeros, 1e-12), exact, atol=2e-4, rtol=0)


@given(seed=st.integers(0, 2**31), v=small_sizes, h=small_sizes)
def test_embedding_matches_torch(seed, v, h):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((v, h)).astype(np.float32)
    ids = rng.integers(0, v, (3, 4))
    assert_close(layers.embedding(ids, table), F.embedding(t(ids), t(table)), atol=0, rtol=0)


@given(x=float_arrays((2, 3, 11), scale=30.0))
def test_softmax_matches_torch(x):
    out = layers.softmax(x)
    assert_close(out, torch.softmax(t(x), -1), **F32)
    assert_close(out.sum(-1), np.ones((2, 3)), atol=1e-6, rtol=0)


# -- attention ---------------------------------------------------------------------------------


def test_attention_hand_case():
    # One head, two keys with equal scores -> the output is the mean of the values; a padded key
    # gets exactly zero weight.
    q = np.zeros((1, 1, 1, 2), np.float32)
    k = np.array([[[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]]], np.float32)
    v = np.array([[[[2.0, 0.0], [0.0, 4.0], [100.0, 100.0]]]], np.float32)
    bias = layers.attention_bias(np.array([[1, 1, 0]]))
    out, probs = layers.attention(q, k, v, bias)
    assert_close(probs, [[[[0.5, 0.5, 0.0]]]], atol=0, rtol=0)
    assert_close(out, [[[[1.0, 2.0]]]], atol=1e-7, rtol=0)


@given(b=tiny_sizes, h=tiny_sizes, T=small_sizes, d=st.sampled_from([1, 4, 8, 64]), seed=st.integers(0, 2**31))
def test_masked_attention_matches_torch(b, h, T, d, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((b, h, T, d)).astype(np.float32) * 2 for _ in range(3))
    lengths = rng.integers(0, T + 1, b)  # 0 = a fully padded row: must not produce NaN
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    out, probs = layers.attention(q, k, v, layers.attention_bias(mask))
    # torch reference: eager attention with transformers' additive mask.
    bias = torch.where(t(mask)[:, None, None, :] != 0, 0.0, torch.finfo(torch.float32).min)
    ref_probs = torch.softmax(t(q) @ t(k).transpose(-1, -2) / math.sqrt(d) + bias, -1)
    assert_close(probs, ref_probs, **F32, name="probs")
    assert_close(out, ref_probs @ t(v), **F32, name="attention output")
    assert not np.isnan(out).any()
    # Where a row has real keys, the padded ones get exactly zero weight.
    has_keys = lengths > 0
    assert (probs[has_keys][..., :][np.broadcast_to(mask[has_keys][:, None, None, :] == 0, probs[has_keys].shape)] == 0).all()
    if has_keys.all():
        sdpa = F.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=t(mask)[:, None, None, :].bool())
        assert_close(out, sdpa, **F32, name="attention vs SDPA")


@pytest.mark.parametrize("name", sorted(layers.ACTIVATIONS))
def test_activation_table_covers_config_choices(name):
    from minialign import AlignTextConfig

    assert name in AlignTextConfig.SUPPORTED_ACTIVATIONS or name == "swish"


# -- convolutions (channels-last in, NCHW torch reference) -------------------------------------


def nhwc(x):
    """torch NCHW tensor -> NumPy NHWC array."""
    return x.permute(0, 2, 3, 1).numpy()


def test_depthwise_conv_hand_case():
    # 1 channel, 3x3 input, 3x3 kernel of ones, same padding: each output is the sum of its
    # 3x3 neighbourhood; the centre sees all nine values 1..9 = 45, a corner sees four.
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    w = np.ones((1, 1, 3, 3), np.float32)
    out = layers.depthwise_conv2d(x, w, stride=1, padding=layers.same_padding(3))
    assert out[0, 1, 1, 0] == 45.0 and out[0, 0, 0, 0] == 1 + 2 + 4 + 5


@given(
    b=st.sampled_from([1, 2]),
    c=st.sampled_from([1, 3, 8]),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    k=st.sampled_from([3, 5]),
    stride=st.sampled_from([1, 2]),
    adjust=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_depthwise_conv_matches_torch(b, c, h, w, k, stride, adjust, seed):
    """Every kernel size, both strides, both stride-2 paddings, odd and even sizes."""
    from minialign.vision_model import depthwise_padding

    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((b, c, h, w)).astype(np.float32))
    weight = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    top, bottom, left, right = depthwise_padding(k, stride, adjust)
    if (h + top + bottom < k) or (w + left + right < k):
        return  # no valid output position: torch raises too
    expected = F.conv2d(F.pad(x, (left, right, top, bottom)), t(weight), stride=stride, groups=c)
    ours = layers.depthwise_conv2d(nhwc(x), weight, stride, (top, bottom, left, right))
    assert_close(ours, nhwc(expected), **F32, name="depthwise")


def test_depthwise_conv_bias_silu_hand_case():
    # The hand case above with bias -45: the centre's sum 45 becomes z = 0 and silu(0) = 0; a
    # corner's 12 becomes -33, silu(-33) ~ -1.5e-13. The mean is that of the nine outputs.
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    w = np.ones((1, 1, 3, 3), np.float32)
    out, means = layers.depthwise_conv2d(x, w, 1, layers.same_padding(3), bias=np.float32([-45]),
                                         activation="silu", return_means=True)
    assert out[0, 1, 1, 0] == 0.0
    assert_close(out[0, 0, 0, 0], -33 / (1 + math.exp(-(-33))), atol=1e-20, rtol=1e-6)
    assert_close(means, out.mean(axis=(1, 2)), atol=0, rtol=1e-6)


@given(
    b=st.sampled_from([1, 2]),
    c=st.sampled_from([1, 3, 8]),
    h=st.integers(3, 12),
    w=st.integers(3, 12),
    k=st.sampled_from([3, 5]),
    stride=st.sampled_from([1, 2]),
    adjust=st.booleans(),
    eps=st.sampled_from([1e-3, 1e-5]),
    seed=st.integers(0, 2**31),
)
def test_depthwise_stage_with_folded_batch_norm_matches_torch(b, c, h, w, k, stride, adjust, eps, seed):
    """The depthwise stage of an MBConv block as the vision tower runs it -- batchnorm folded into
    the weights, bias + SiLU fused, the squeeze-excitation means returned -- against torch's
    conv -> batch_norm -> silu and the mean over space."""
    from minialign.vision_model import depthwise_padding

    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((b, c, h, w)).astype(np.float32))
    weight = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    bn_weight, bn_bias, mean = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.1, 3, c).astype(np.float32)
    top, bottom, left, right = depthwise_padding(k, stride, adjust)
    if (h + top + bottom < k) or (w + left + right < k):
        return  # no valid output position: torch raises too
    conv = F.conv2d(F.pad(x, (left, right, top, bottom)), t(weight), stride=stride, groups=c)
    expected = F.silu(F.batch_norm(conv, t(mean), t(var), t(bn_weight), t(bn_bias), training=False, eps=eps))
    folded, shift = layers.fold_batch_norm(weight, bn_weight, bn_bias, mean, var, eps)
    ours, means = layers.depthwise_conv2d(nhwc(x), folded, stride, (top, bottom, left, right), bias=shift,
                                          activation="silu", return_means=True)
    assert_close(ours, nhwc(expected), **F32, name="depthwise + BN + SiLU")
    assert_close(means, expected.mean(dim=(2, 3)), **F32, name="SE means")


def test_depthwise_conv_bias_and_silu_options():
    """depthwise_conv2d(..., bias=b, activation="silu") is silu(depthwise_conv2d(...) + b), exactly."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 5)).astype(np.float32)
    weight = rng.standard_normal((5, 1, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    plain = layers.depthwise_conv2d(x, weight, 2, (0, 1, 0, 1))
    np.testing.assert_array_equal(layers.depthwise_conv2d(x, weight, 2, (0, 1, 0, 1), bias=bias), plain + bias)
    np.testing.assert_array_equal(layers.depthwise_conv2d(x, weight, 2, (0, 1, 0, 1), bias=bias, activation="silu"),
                                  layers.silu(plain + bias))
    with pytest.raises(ValueError, match="activation must be None or 'silu', got 'gelu'"):
        layers.depthwise_conv2d(x, weight, 2, (0, 1, 0, 1), activation="gelu")


@pytest.mark.parametrize("k, stride, padding", [(3, 1, (1, 1, 1, 1)), (5, 2, (1, 2, 1, 2))])
@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_depthwise_conv_bands_and_threads_match_torch(monkeypatch, threads, k, stride, padding):
    """Bands of two output rows (an odd Ho leaves a short last band) on 1, 2 and 3 threads, both
    strides: every output row is computed exactly once, whatever the split, and the means do not
    depend on it."""
    b, c, h, w = 2, 5, 13, 11
    top, bottom, left, right = padding
    wo = (w + left + right - k) // stride + 1
    rng = np.random.default_rng(int(threads))
    x = torch.from_numpy(rng.standard_normal((b, c, h, w)).astype(np.float32))
    weight = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", "1")
    _, whole_means = layers.depthwise_conv2d(nhwc(x), weight, stride, padding, activation="silu", return_means=True)
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", threads)
    monkeypatch.setattr(layers, "_DEPTHWISE_BAND", 2 * b * wo * c)  # a row of the output is B * Wo * C
    expected = F.conv2d(F.pad(x, (left, right, top, bottom)), t(weight), stride=stride, groups=c)
    ours = layers.depthwise_conv2d(nhwc(x), weight, stride, padding)
    assert_close(ours, nhwc(expected), **F32, name="depthwise")
    fused, means = layers.depthwise_conv2d(nhwc(x), weight, stride, padding, activation="silu", return_means=True)
    assert_close(fused, nhwc(F.silu(expected)), **F32, name="depthwise + SiLU")
    np.testing.assert_array_equal(means, whole_means)


@pytest.mark.parametrize("run_elements", [1, 12, 30, 4096])
def test_depthwise_conv_pixel_runs_match_torch(monkeypatch, run_elements):
    """At stride 1 einsum's inner loop covers a run of T pixels x C channels (T divides the output
    width, T * C <= _RUN_ELEMENTS): with 6 channels and 12 output columns these limits give runs
    of 1, 2, 4 (the largest divisor of 12 with T * 6 <= 30) and 12 pixels."""
    b, c, h, w, k = 2, 6, 7, 12, 3
    monkeypatch.setattr(layers, "_RUN_ELEMENTS", run_elements)
    rng = np.random.default_rng(run_elements)
    x = torch.from_numpy(rng.standard_normal((b, c, h, w)).astype(np.float32))
    weight = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    expected = F.silu(F.conv2d(x, t(weight), t(bias), padding=1, groups=c))
    ours, means = layers.depthwise_conv2d(nhwc(x), weight, 1, (1, 1, 1, 1), bias=bias, activation="silu",
                                          return_means=True)
    assert_close(ours, nhwc(expected), **F32, name="depthwise + bias + SiLU")
    assert_close(means, expected.mean(dim=(2, 3)).numpy(), **F32, name="SE means")
    assert layers._pixels_per_run(w, c) == {1: 1, 12: 2, 30: 4, 4096: 12}[run_elements]


def test_depthwise_windows_refuse_a_run_at_stride_2():
    """A run of pixels is one memory-contiguous axis only at stride 1."""
    with pytest.raises(ValueError, match="a run of 4 pixels needs stride 1, got stride 2"):
        layers._depthwise_windows(np.zeros((1, 9, 9, 3), np.float32), 3, 2, 4)


@given(h=st.integers(2, 11), w=st.integers(2, 11), cout=st.sampled_from([1, 4, 16]), stride=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**31))
def test_conv2d_matches_torch(h, w, cout, stride, seed):
    """The dense stem conv, with the stem's right/bottom padding and with symmetric padding, plain
    and with its fused bias + SiLU."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((2, 3, h, w)).astype(np.float32))
    weight = rng.standard_normal((cout, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    for pad in [(0, 1, 0, 1), (1, 1, 1, 1)]:
        top, bottom, left, right = pad
        expected = F.conv2d(F.pad(x, (left, right, top, bottom)), t(weight), stride=stride)
        assert_close(layers.conv2d(nhwc(x), weight, stride, pad), nhwc(expected), **F32, name=f"conv2d pad={pad}")
        fused = layers.conv2d(nhwc(x), weight, stride, pad, bias=bias, activation="silu")
        assert_close(fused, nhwc(F.silu(expected + t(bias)[:, None, None])), **F32, name=f"conv2d + SiLU pad={pad}")


@given(cin=small_sizes, cout=small_sizes, seed=st.integers(0, 2**31))
def test_pointwise_conv_matches_torch(cin, cout, seed):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((2, cin, 5, 3)).astype(np.float32))
    weight = rng.standard_normal((cout, cin, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    assert_close(layers.pointwise_conv(nhwc(x), weight, bias), nhwc(F.conv2d(x, t(weight), t(bias))), **F32)
    assert_close(layers.pointwise_conv(nhwc(x), weight, bias, activation="silu"),
                 nhwc(F.silu(F.conv2d(x, t(weight), t(bias)))), **F32, name="pointwise + SiLU")


@given(b=st.sampled_from([1, 3]), cin=small_sizes, cout=small_sizes, seed=st.integers(0, 2**31))
def test_pointwise_conv_with_gate_and_residual_matches_torch(b, cin, cout, seed):
    """The projection of an MBConv block: conv(x * gate) + bias + residual, the gate (one factor per
    image and input channel) applied to the weight instead of the activation."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((b, cin, 4, 5)).astype(np.float32))
    gate = rng.uniform(0, 1, (b, cin)).astype(np.float32)
    residual = torch.from_numpy(rng.standard_normal((b, cout, 4, 5)).astype(np.float32))
    weight = rng.standard_normal((cout, cin, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    expected = F.conv2d(x * t(gate)[:, :, None, None], t(weight), t(bias)) + residual
    ours = layers.pointwise_conv(nhwc(x), weight, bias, input_scale=gate, residual=nhwc(residual))
    assert_close(ours, nhwc(expected), **F32, name="gated pointwise + residual")


@given(c=small_sizes, eps=st.sampled_from([1e-3, 1e-5]), seed=st.integers(0, 2**31))
def test_batch_norm_matches_torch(c, eps, seed):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((2, c, 4, 3)).astype(np.float32) * 3 + 1)
    weight, bias, mean = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.1, 3, c).astype(np.float32)
    expected = F.batch_norm(x, t(mean), t(var), t(weight), t(bias), training=False, eps=eps)
    assert_close(layers.batch_norm(nhwc(x), weight, bias, mean, var, eps), nhwc(expected), **F32)


@given(c=small_sizes, eps=st.sampled_from([1e-3, 1e-5]), seed=st.integers(0, 2**31))
def test_fold_batch_norm_matches_conv_then_batch_norm_in_torch(c, eps, seed):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((2, 3, 6, 5)).astype(np.float32))
    conv_weight = rng.standard_normal((c, 3, 3, 3)).astype(np.float32)
    weight, bias, mean = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.1, 3, c).astype(np.float32)
    expected = F.batch_norm(F.conv2d(x, t(conv_weight)), t(mean), t(var), t(weight), t(bias), training=False, eps=eps)
    folded, shift = layers.fold_batch_norm(conv_weight, weight, bias, mean, var, eps)
    assert folded.dtype == shift.dtype == np.float32
    assert_close(layers.conv2d(nhwc(x), folded, bias=shift), nhwc(expected), **F32, name="folded conv")


def test_bias_act_hand_case():
    # silu(0) = 0, silu(2) = 2 / (1 + e^-2), then + residual.
    x = np.array([-1.0, 1.0], np.float32).reshape(2, 1)
    out = layers.bias_act(x, np.float32([1.0]), "silu", residual=np.float32([[10.0], [20.0]]))
    assert_close(out, [[10.0], [20 + 2 / (1 + math.exp(-2))]], atol=1e-6, rtol=1e-6)
    assert x[1, 0] == 1.0  # not in place unless asked


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_bias_act_bands_and_threads_equal_the_composition(monkeypatch, threads):
    """Many bands (7 rows each over 3 * 11 * 13 = 429 rows: a short last band) on 1, 2 and 3
    threads give exactly silu(x + bias) + residual: the same float32 operations, in the same
    order; in place too."""
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", threads)
    monkeypatch.setattr(layers, "_EPILOGUE_BAND", 7 * 17)
    rng = np.random.default_rng(int(threads))
    x = (rng.standard_normal((3, 11, 13, 17)) * 3).astype(np.float32)
    bias = rng.standard_normal(17).astype(np.float32)
    residual = rng.standard_normal(x.shape).astype(np.float32)
    expected = layers.silu(x + bias) + residual
    np.testing.assert_array_equal(layers.bias_act(x, bias, "silu", residual), expected)
    np.testing.assert_array_equal(layers.bias_act(x, bias, "silu", residual, out=x), expected)
    np.testing.assert_array_equal(x, expected)


def test_bias_act_silu_saturates_without_warnings(monkeypatch):
    # exp(-z) overflows to inf for z < -88, in the pool's threads too (NumPy's error state is per
    # thread, so the op must silence it inside each band).
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", "2")
    monkeypatch.setattr(layers, "_EPILOGUE_BAND", 2)
    x = np.array([-1000.0, -90.0, 90.0, 1000.0], np.float32).reshape(4, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = layers.bias_act(x, None, "silu")
    assert_close(out, [[0.0], [0.0], [90.0], [1000.0]], atol=1e-35, rtol=0)


@pytest.mark.parametrize("num_rows, rows_per_band", [(1, 1), (1, 5), (13, 4), (13, 1000), (100, 3), (7, 1)])
@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_parallel_bands_covers_every_row_once(monkeypatch, num_rows, rows_per_band, threads):
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", threads)
    seen = np.zeros(num_rows, int)
    bands = []

    def visit(rows):
        assert 1 <= rows.stop - rows.start <= rows_per_band
        bands.append(rows)  # list.append is atomic under the GIL
        seen[rows] += 1  # bands are disjoint, so concurrent writes never touch the same row

    layers.parallel_bands(visit, num_rows, rows_per_band)
    np.testing.assert_array_equal(seen, 1)
    assert len(bands) == -(-num_rows // rows_per_band)


def test_parallel_bands_raises_a_bands_exception(monkeypatch):
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", "2")

    def fail_on_row_3(rows):
        if rows.start <= 3 < rows.stop:
            raise ValueError("band with row 3")

    with pytest.raises(ValueError, match="band with row 3"):
        layers.parallel_bands(fail_on_row_3, 8, 1)


def test_parallel_bands_nested_calls_finish(monkeypatch):
    """A band that itself calls parallel_bands (an op using another) must not wait for a helper
    that can never start: the pool's threads are all busy in the outer call."""
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", "2")
    seen = np.zeros((4, 6), int)

    def outer(rows):
        for r in range(rows.start, rows.stop):
            def inner(cols, r=r):
                seen[r, cols] += 1
            layers.parallel_bands(inner, 6, 1)

    runner = threading.Thread(target=layers.parallel_bands, args=(outer, 4, 1), daemon=True)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "nested parallel_bands hung"
    np.testing.assert_array_equal(seen, 1)


def test_num_threads_reads_the_environment(monkeypatch):
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", "3")
    assert layers.num_threads() == 3
    monkeypatch.delenv("MINIALIGN_NUM_THREADS")
    assert layers.num_threads() == (os.cpu_count() or 1)


@given(c=st.sampled_from([1, 4, 12]), se=st.sampled_from([1, 3]), seed=st.integers(0, 2**31))
def test_squeeze_excite_matches_transformers_layer(c, se, seed):
    from transformers.models.align.modeling_align import AlignVisionSqueezeExciteLayer

    from reference import randomize_
    from transformers import AlignVisionConfig

    config = AlignVisionConfig(squeeze_expansion_ratio=se / c)
    module = randomize_(AlignVisionSqueezeExciteLayer(config, in_dim=c, expand_dim=c), seed=seed % 1000)
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, c, 5, 6)).astype(np.float32))
    with torch.no_grad():
        expected = module(x)
    p = {k: v.numpy() for k, v in module.state_dict().items()}
    ours = layers.squeeze_excite(nhwc(x), p["reduce.weight"], p["reduce.bias"], p["expand.weight"], p["expand.bias"])
    assert_close(ours, nhwc(expected), **F32)


@given(kind=st.sampled_from(["mean", "max"]), h=st.integers(1, 9), seed=st.integers(0, 2**31))
def test_global_pool_matches_transformers_pooler(kind, h, seed):
    # transformers pools with AvgPool2d/MaxPool2d(kernel=hidden_dim, ceil_mode=True): one window
    # that covers the whole (smaller) map, i.e. a plain mean / max over space.
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, 4, h, h + 1)).astype(np.float32))
    pool = torch.nn.AvgPool2d(2560, ceil_mode=True) if kind == "mean" else torch.nn.MaxPool2d(2560, ceil_mode=True)
    assert_close(layers.global_pool(nhwc(x), kind), pool(x)[:, :, 0, 0], **F32)
