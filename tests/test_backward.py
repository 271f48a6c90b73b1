"""Every hand-written backward in minialign/backward.py against torch autograd.

The reference runs in float64 on the same float32 inputs, so the comparison measures our float32
rounding only. Each layer opens with a hand-computed case where one teaches something; then
hypothesis draws small shapes (odd and prime sizes, batch 1, padded keys, both strides and
kernel sizes, asymmetric paddings). A finite-difference check at the end tests the batchnorm
math without torch.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TOLERANCES, assert_close
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import seeds, small_sizes, tiny_sizes

from minialign import loss
from minialign.backends import numpy as fast
from minialign.backends.reference import attention_bias, squeeze_excite
from minialign.training import backward as bw

F32 = TOLERANCES["float32"]
# A float32 backward vs float64 autograd: the float32 row of TOLERANCES holds for every layer
# (300 hypothesis examples each, HYPOTHESIS_PROFILE=thorough) but the two normalisations. Their
# dx = (1/sigma) (g - mean(g) - x_hat * mean(g * x_hat)) subtracts terms of |g|'s size, and
# x_hat = (x - mean) / sigma carries float32's rounding of x (~1e-7 |x|) magnified by |x| / sigma:
# the input's conditioning, which a float32 forward (ours or torch's) cannot escape. The tests
# therefore draw rows and channels with sigma >= WELL_CONDITIONED (|x| / sigma <~ 100) and check
# near-constant ones in float64; measured errors then reach 6e-5 (thorough profile).
GRAD = F32
NORM_GRAD = {"atol": 1e-4, "rtol": 1e-4}
WELL_CONDITIONED = 0.1


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def autograd(fn, *arrays, dout):
    """Run ``fn`` on float64 leaf tensors made from ``arrays``, backpropagate ``dout``; return
    the output and every input's gradient (None for an input ``fn`` did not use) as float64
    NumPy arrays (assert_close would compare a tensor in float32)."""
    leaves = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = fn(*leaves)
    out.backward(torch.as_tensor(dout, dtype=torch.float64))
    return out.detach().numpy(), [None if leaf.grad is None else leaf.grad.numpy() for leaf in leaves]


def nchw(x):  # torch [B, H, W, C] -> [B, C, H, W]
    return x.permute(0, 3, 1, 2)


def nhwc(x):  # torch [B, C, H, W] -> [B, H, W, C]
    return x.permute(0, 2, 3, 1)


# -- embedding ---------------------------------------------------------------------------------


def test_embedding_backward_adds_repeated_ids():
    # ids 0, 2, 0: row 0 receives both of its dout rows, row 1 nothing. Fancy-index += keeps
    # only the last write for a repeated id, which is why the backward uses np.add.at.
    table = np.zeros((3, 2), np.float32)
    ids = np.array([[0, 2, 0]])
    dout = np.array([[[1.0, 2.0], [3.0, 4.0], [10.0, 20.0]]], np.float32)
    _, cache = bw.embedding_forward(ids, table)
    dtable = bw.embedding_backward(dout, cache)
    assert_close(dtable, [[11.0, 22.0], [0.0, 0.0], [3.0, 4.0]], atol=0, rtol=0)
    buffered = np.zeros((3, 2), np.float32)
    buffered[ids] += dout
    assert buffered[0, 0] == 10.0  # the first occurrence's 1.0 is lost


@given(v=small_sizes, h=small_sizes, b=tiny_sizes, t=small_sizes, seed=seeds)
def test_embedding_backward_matches_torch(v, h, b, t, seed):
    rng = np.random.default_rng(seed)
    table, ids = randn(rng, v, h), rng.integers(0, v, (b, t))
    dout = randn(rng, b, t, h)
    out, cache = bw.embedding_forward(ids, table)
    ref, (dtable,) = autograd(lambda w: F.embedding(torch.from_numpy(ids), w), table, dout=dout)
    assert_close(out, ref, atol=0, rtol=0, name="out")
    assert_close(bw.embedding_backward(dout, cache), dtable, **GRAD, name="dtable")


# -- linear and layer norm ---------------------------------------------------------------------


@given(b=tiny_sizes, t=small_sizes, n_in=small_sizes, n_out=small_sizes, has_bias=st.booleans(), seed=seeds)
def test_linear_backward_matches_torch(b, t, n_in, n_out, has_bias, seed):
    rng = np.random.default_rng(seed)
    x, w, bias = randn(rng, b, t, n_in), randn(rng, n_out, n_in), randn(rng, n_out)
    dout = randn(rng, b, t, n_out)
    out, cache = bw.linear_forward(x, w, bias if has_bias else None)
    np.testing.assert_array_equal(out, fast.linear(x, w, bias if has_bias else None))
    ref, grads = autograd(lambda x, w, bias: F.linear(x, w, bias if has_bias else None), x, w, bias, dout=dout)
    dx, dw, db = bw.linear_backward(dout, cache)
    assert_close(out, ref, **F32, name="out")
    assert_close(dx, grads[0], **GRAD, name="dx")
    assert_close(dw, grads[1], **GRAD, name="dweight")
    if has_bias:
        assert_close(db, grads[2], **GRAD, name="dbias")
    else:
        assert db is None


def test_layer_norm_backward_hand_case():
    # A constant upstream gradient with gamma = 1 moves every x_hat equally, which shifts the
    # mean and leaves the output unchanged: dx = 0. dgamma = x_hat (one row), dbeta = 1.
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    _, cache = bw.layer_norm_forward(x, np.ones(3, np.float32), np.zeros(3, np.float32), eps=0.0)
    dx, dgamma, dbeta = bw.layer_norm_backward(np.ones((1, 3), np.float32), cache)
    assert_close(dx, np.zeros((1, 3)), atol=1e-7, rtol=0)
    assert_close(dgamma, [-math.sqrt(1.5), 0.0, math.sqrt(1.5)], atol=1e-6, rtol=0)
    assert_close(dbeta, np.ones(3), atol=0, rtol=0)


@given(b=tiny_sizes, t=small_sizes, h=st.sampled_from([1, 2, 7, 13, 32]), eps=st.sampled_from([1e-12, 1e-5]),
       offset=st.sampled_from([0.0, 3.0]), seed=seeds)
def test_layer_norm_backward_matches_torch(b, t, h, eps, offset, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, b, t, h, scale=2.0) + np.float32(offset)
    assume(h == 1 or x.std(axis=-1).min() >= WELL_CONDITIONED)  # h = 1: x - mean = 0 exactly
    w, bias = (1 + 0.3 * randn(rng, h)).astype(np.float32), randn(rng, h)
    dout = randn(rng, b, t, h)
    out, cache = bw.layer_norm_forward(x, w, bias, eps)
    ref, grads = autograd(lambda x, w, bias: F.layer_norm(x, (h,), w, bias, eps), x, w, bias, dout=dout)
    for name, ours, theirs in zip(("dx", "dweight", "dbias"), bw.layer_norm_backward(dout, cache), grads):
        # h = 1 with eps = 1e-12: x_hat = 0 / sqrt(1e-12), every gradient but dbias is ~0.
        assert_close(ours, theirs, **NORM_GRAD, name=name)
    assert_close(out, ref, **F32, name="out")


def test_normalization_backward_on_near_constant_rows_in_float64():
    """Rows and channels whose values lie 1e-4 apart around 3 (|x| / sigma ~ 1e5, where float32
    keeps no digit of x_hat): in float64 -- the functions are dtype-generic -- the math still
    matches autograd to float64 precision."""
    rng = np.random.default_rng(3)
    x = 3 + 1e-4 * rng.standard_normal((2, 3, 2, 5))
    weight, bias, dout = 1 + 0.3 * rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal(x.shape)
    _, cache = bw.layer_norm_forward(x, weight, bias, 1e-12)
    _, grads = autograd(lambda x, w, b: F.layer_norm(x, (5,), w, b, 1e-12), x, weight, bias, dout=dout)
    for name, ours, theirs in zip(("dx", "dweight", "dbias"), bw.layer_norm_backward(dout, cache), grads):
        assert ours.dtype == np.float64
        assert_close(ours, theirs, atol=1e-9, rtol=1e-9, name=f"layer_norm {name}")
    _, cache, _, _ = bw.batch_norm_forward(x, weight, bias, np.zeros(5), np.ones(5), 1e-12, momentum=0.1)
    _, grads = autograd(lambda x, w, b: nhwc(F.batch_norm(nchw(x), None, None, w, b, training=True, eps=1e-12)),
                        x, weight, bias, dout=dout)
    for name, ours, theirs in zip(("dx", "dweight", "dbias"), bw.batch_norm_backward(dout, cache), grads):
        assert_close(ours, theirs, atol=1e-9, rtol=1e-9, name=f"batch_norm {name}")


# -- elementwise activations -------------------------------------------------------------------

ACTIVATIONS = {  # name -> (forward, backward, torch function)
    "gelu": (bw.gelu_forward, bw.gelu_backward, F.gelu),
    "tanh": (bw.tanh_forward, bw.tanh_backward, torch.tanh),
    "sigmoid": (bw.sigmoid_forward, bw.sigmoid_backward, torch.sigmoid),
    "silu": (bw.silu_forward, bw.silu_backward, F.silu),
    "gelu_new": (bw.gelu_new_forward, bw.gelu_new_backward, lambda t: F.gelu(t, approximate="tanh")),
    "relu": (bw.relu_forward, bw.relu_backward, F.relu),
}


_U1 = math.sqrt(2 / math.pi) * (1 + 0.044715)  # gelu_new's u at x = 1, and du/dx there
_DU1 = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715)


def test_activation_backward_hand_values():
    # At 0: gelu' = Phi(0) = 1/2, tanh' = 1, sigmoid' = 1/4, silu' = sigma(0) = 1/2.
    # At 1: gelu' = Phi(1) + phi(1) = 0.8413447 + 0.2419707.
    x, ones = np.array([0.0, 1.0], np.float32), np.ones(2, np.float32)
    expected = {"gelu": [0.5, 0.8413447460685429 + 0.24197072451914337], "tanh": [1.0, 1 - math.tanh(1) ** 2],
                "sigmoid": [0.25, math.exp(-1) / (1 + math.exp(-1)) ** 2],
                "silu": [0.5, (1 / (1 + math.exp(-1))) * (1 + 1 - 1 / (1 + math.exp(-1)))],
                # 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) u', u = sqrt(2/pi) (x + 0.044715 x^3); at x = 0: 0.5
                "gelu_new": [0.5, 0.5 * (1 + math.tanh(_U1)) + 0.5 * (1 - math.tanh(_U1) ** 2) * _DU1],
                "relu": [0.0, 1.0]}
    for name, (forward, backward, _) in ACTIVATIONS.items():
        _, cache = forward(x)
        assert_close(backward(ones, cache), expected[name], atol=1e-7, rtol=1e-6, name=name)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(shape=st.tuples(tiny_sizes, small_sizes), scale=st.sampled_from([1.0, 4.0, 30.0]), seed=seeds)
def test_activation_backward_matches_torch(name, shape, scale, seed):
    forward, backward, reference = ACTIVATIONS[name]
    rng = np.random.default_rng(seed)
    x, dout = randn(rng, *shape, scale=scale), randn(rng, *shape)
    out, cache = forward(x)
    ref, (dx,) = autograd(reference, x, dout=dout)
    assert_close(out, ref, **F32, name=f"{name} out")
    ours = backward(dout, cache)
    assert ours.dtype == np.float32
    assert_close(ours, dx, **GRAD, name=f"{name} dx")


# -- attention ---------------------------------------------------------------------------------


def torch_attention(q, k, v, mask):
    """Eager attention with transformers' additive mask, as in test_ops."""
    bias = torch.where(torch.from_numpy(mask)[:, None, None, :] != 0, 0.0, torch.finfo(torch.float32).min)
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias.double(), -1)
    return probs @ v


def test_attention_backward_hand_case():
    # q = 0: the two real keys score equally, P = [1/2, 1/2, 0] (the third key is padding), so
    # dv = P^T dout gives each real key half of dout and the padded one nothing; dk is 0 for the
    # padded key (and here for all: with q = 0, dk = dS^T q / sqrt(d) = 0).
    q = np.zeros((1, 1, 1, 2), np.float32)
    k = np.array([[[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]]], np.float32)
    v = np.array([[[[2.0, 0.0], [0.0, 4.0], [100.0, 100.0]]]], np.float32)
    _, cache = bw.attention_forward(q, k, v, attention_bias(np.array([[1, 1, 0]])))
    dq, dk, dv = bw.attention_backward(np.array([[[[1.0, 2.0]]]], np.float32), cache)
    assert_close(dv, [[[[0.5, 1.0], [0.5, 1.0], [0.0, 0.0]]]], atol=0, rtol=0)
    assert (dk == 0).all()
    # dS = P * (dP - <dP, P>) with dP = dout v^T = [2, 8, 300]: [1/2 (2 - 5), 1/2 (8 - 5), 0];
    # dq = dS k / sqrt(2) = [-1.5, 1.5] / sqrt(2).
    assert_close(dq, [[[[-1.5 / math.sqrt(2), 1.5 / math.sqrt(2)]]]], atol=1e-6, rtol=0)


@given(b=tiny_sizes, h=st.sampled_from([1, 2, 3]), t=small_sizes, d=st.sampled_from([1, 4, 7, 16]), seed=seeds)
def test_attention_backward_matches_torch(b, h, t, d, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (randn(rng, b, h, t, d, scale=1.5) for _ in range(3))
    dout = randn(rng, b, h, t, d)
    lengths = rng.integers(1, t + 1, b)  # real keys, often followed by padded ones
    if b > 1:
        lengths[-1] = 0  # a fully padded sequence
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)
    out, cache = bw.attention_forward(q, k, v, attention_bias(mask))
    ref, (dq_ref, dk_ref, dv_ref) = autograd(lambda q, k, v: torch_attention(q, k, v, mask), q, k, v, dout=dout)
    dq, dk, dv = bw.attention_backward(dout, cache)
    assert_close(out, ref, **F32, name="out")
    assert_close(dv, dv_ref, **GRAD, name="dv")
    real = lengths > 0  # sequences with a real key: autograd's dq and dk are the true gradient there
    assert_close(dq[real], dq_ref[real], **GRAD, name="dq")
    assert_close(dk[real], dk_ref[real], **GRAD, name="dk")
    # Padded keys get exactly zero, and a fully padded sequence's q and k none at all (its output
    # is the mean of v whatever q and k are).
    padded = np.broadcast_to((mask == 0)[:, None, :, None], dk.shape)
    assert (dk[padded] == 0).all()
    assert (dq[~real] == 0).all()
    assert not np.isnan(dq).any() and not np.isnan(dk).any() and not np.isnan(dv).any()


def test_attention_backward_without_mask():
    rng = np.random.default_rng(0)
    q, k, v = (randn(rng, 2, 3, 5, 4) for _ in range(3))
    dout = randn(rng, 2, 3, 5, 4)
    _, cache = bw.attention_forward(q, k, v, None)
    _, refs = autograd(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), q, k, v, dout=dout)
    for name, ours, ref in zip(("dq", "dk", "dv"), bw.attention_backward(dout, cache), refs):
        assert_close(ours, ref, **GRAD, name=name)


# -- convolutions ------------------------------------------------------------------------------

paddings = st.tuples(*[st.integers(0, 2)] * 4)  # (top, bottom, left, right), drawn independently


def torch_pad(x, padding):
    top, bottom, left, right = padding
    return F.pad(x, (left, right, top, bottom))


@given(b=st.sampled_from([1, 2]), cin=st.sampled_from([1, 3]), cout=st.sampled_from([1, 5, 8]),
       h=st.integers(1, 9), w=st.integers(1, 9), k=st.sampled_from([1, 3, 5]), stride=st.sampled_from([1, 2]),
       padding=paddings, has_bias=st.booleans(), seed=seeds)
def test_conv2d_backward_matches_torch(b, cin, cout, h, w, k, stride, padding, has_bias, seed):
    top, bottom, left, right = padding
    if h + top + bottom < k or w + left + right < k:
        return  # no output pixel
    rng = np.random.default_rng(seed)
    x, weight, bias = randn(rng, b, h, w, cin), randn(rng, cout, cin, k, k), randn(rng, cout)
    out, cache = bw.conv2d_forward(x, weight, stride, padding, bias if has_bias else None)
    dout = randn(rng, *out.shape)

    def reference(x, weight, bias):
        return nhwc(F.conv2d(torch_pad(nchw(x), padding), weight, bias if has_bias else None, stride=stride))

    ref, grads = autograd(reference, x, weight, bias, dout=dout)
    dx, dweight, dbias = bw.conv2d_backward(dout, cache)
    assert_close(out, ref, **F32, name="out")
    assert_close(dx, grads[0], **GRAD, name="dx")
    assert_close(dweight, grads[1], **GRAD, name="dweight")
    assert (dbias is None) != has_bias
    if has_bias:
        assert_close(dbias, grads[2], **GRAD, name="dbias")


@given(b=st.sampled_from([1, 3]), cin=small_sizes, cout=small_sizes, gated=st.booleans(), has_bias=st.booleans(),
       seed=seeds)
def test_pointwise_conv_backward_matches_torch(b, cin, cout, gated, has_bias, seed):
    """The projection of an MBConv block, conv(x * gate) + bias, with and without the gate."""
    rng = np.random.default_rng(seed)
    x, weight, bias = randn(rng, b, 5, 3, cin), randn(rng, cout, cin, 1, 1), randn(rng, cout)
    gate = rng.uniform(0, 1, (b, cin)).astype(np.float32)
    dout = randn(rng, b, 5, 3, cout)
    out, cache = bw.pointwise_conv_forward(x, weight, bias if has_bias else None, input_scale=gate if gated else None)

    def reference(x, gate, weight, bias):
        scaled = nchw(x) * gate[:, :, None, None] if gated else nchw(x)
        return nhwc(F.conv2d(scaled, weight, bias if has_bias else None))

    ref, grads = autograd(reference, x, gate, weight, bias, dout=dout)
    ours = bw.pointwise_conv_backward(dout, cache)  # (dx, dinput_scale, dweight, dbias)
    assert_close(out, ref, **F32, name="out")
    for name, mine, theirs, used in zip(("dx", "dinput_scale", "dweight", "dbias"), ours, grads,
                                        (True, gated, True, has_bias)):
        if used:
            assert_close(mine, theirs, **GRAD, name=name)
        else:
            assert mine is None, name


def test_depthwise_conv_backward_hand_case():
    # One channel, 3x3 input, 3x3 kernel of ones, same padding, dout = 1 everywhere: each input
    # pixel is in as many windows as it has neighbours (itself included), the centre in all 9, a
    # corner in 4; dw[i, j] = sum of the input pixels tap (i, j) reads = 45 at the centre tap.
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    _, cache = bw.depthwise_conv2d_forward(x, np.ones((1, 1, 3, 3), np.float32), 1, (1, 1, 1, 1))
    dx, dw, db = bw.depthwise_conv2d_backward(np.ones((1, 3, 3, 1), np.float32), cache)
    assert_close(dx[0, :, :, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]], atol=0, rtol=0)
    assert dw[0, 0, 1, 1] == 45.0 and dw[0, 0, 0, 0] == 1 + 2 + 4 + 5
    assert db is None


@given(b=st.sampled_from([1, 2]), c=st.sampled_from([1, 3, 8]), h=st.integers(1, 11), w=st.integers(1, 11),
       k=st.sampled_from([3, 5]), stride=st.sampled_from([1, 2]), padding=st.tuples(*[st.integers(0, 3)] * 4),
       has_bias=st.booleans(), seed=seeds)
def test_depthwise_conv_backward_matches_torch(b, c, h, w, k, stride, padding, has_bias, seed):
    """Both kernel sizes and strides, any asymmetric padding (the vision tower's are (k//2,)*4 and
    the stride-2 ones with one row/column less on the top/left)."""
    top, bottom, left, right = padding
    if h + top + bottom < k or w + left + right < k:
        return  # no output pixel
    rng = np.random.default_rng(seed)
    x, weight, bias = randn(rng, b, h, w, c), randn(rng, c, 1, k, k), randn(rng, c)
    out, cache = bw.depthwise_conv2d_forward(x, weight, stride, padding, bias if has_bias else None)
    dout = randn(rng, *out.shape)

    def reference(x, weight, bias):
        padded = torch_pad(nchw(x), padding)
        return nhwc(F.conv2d(padded, weight, bias if has_bias else None, stride=stride, groups=c))

    ref, grads = autograd(reference, x, weight, bias, dout=dout)
    dx, dweight, dbias = bw.depthwise_conv2d_backward(dout, cache)
    assert_close(out, ref, **F32, name="out")
    assert_close(dx, grads[0], **GRAD, name="dx")
    assert_close(dweight, grads[1], **GRAD, name="dweight")
    if has_bias:
        assert_close(dbias, grads[2], **GRAD, name="dbias")


# -- batch norm (training mode) ----------------------------------------------------------------


def test_batch_norm_running_stats_hand_case():
    # One channel, values 1 and 3: batch mean 2, biased var 1 (normalises to -1, +1), unbiased
    # var 2. Torch's convention with m = 0.99 (what transformers' ALIGN passes): 0.01 old + 0.99 new.
    x = np.array([1.0, 3.0], np.float32).reshape(2, 1, 1, 1)
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    out, _, mean, var = bw.batch_norm_forward(x, one, zero, zero, one, eps=0.0, momentum=0.99)
    assert_close(out.ravel(), [-1.0, 1.0], atol=1e-7, rtol=0)
    assert_close(mean, [0.99 * 2], atol=1e-6, rtol=0)
    assert_close(var, [0.01 * 1 + 0.99 * 2], atol=1e-6, rtol=0)


def test_transformers_align_passes_keras_momentum_to_torch():
    """What the momentum docs in batch_norm_forward rest on: transformers hands the config's 0.99
    (a Keras-convention value) to torch's BatchNorm2d, except for the expansion's batchnorm."""
    from transformers import AlignVisionConfig
    from transformers.models.align import modeling_align as m

    config = AlignVisionConfig()
    assert config.batch_norm_momentum == 0.99
    assert m.AlignVisionEmbeddings(config).batchnorm.momentum == 0.99
    assert m.AlignVisionDepthwiseLayer(config, 8, 1, 3, False).depthwise_norm.momentum == 0.99
    assert m.AlignVisionFinalBlockLayer(config, 8, 4, 1, 0.0, True).project_bn.momentum == 0.99
    assert m.AlignVisionExpansionLayer(config, 4, 8, 1).expand_bn.momentum == 0.1  # torch's default


@given(b=st.sampled_from([1, 2, 3]), h=st.integers(1, 5), w=st.sampled_from([1, 2, 7]), c=small_sizes,
       eps=st.sampled_from([1e-3, 1e-5]), momentum=st.sampled_from([0.1, 0.99, 0.01]),
       offset=st.sampled_from([0.0, 4.0]), seed=seeds)
def test_batch_norm_backward_and_running_stats_match_torch(b, h, w, c, eps, momentum, offset, seed):
    if b * h * w < 2:
        return  # tested below: no unbiased variance
    rng = np.random.default_rng(seed)
    x = randn(rng, b, h, w, c, scale=2.0) + np.float32(offset)
    assume(x.std(axis=(0, 1, 2)).min() >= WELL_CONDITIONED)
    weight, bias = (1 + 0.3 * randn(rng, c)).astype(np.float32), randn(rng, c)
    running_mean, running_var = randn(rng, c), rng.uniform(0.5, 2.0, c).astype(np.float32)
    dout = randn(rng, b, h, w, c)
    out, cache, new_mean, new_var = bw.batch_norm_forward(x, weight, bias, running_mean, running_var, eps,
                                                          momentum=momentum)
    # torch's module in train mode, with our momentum as its (same-convention) momentum.
    bn = torch.nn.BatchNorm2d(c, eps=eps, momentum=momentum).double().train()
    with torch.no_grad():
        bn.running_mean.copy_(torch.from_numpy(running_mean))
        bn.running_var.copy_(torch.from_numpy(running_var))
    ref, grads = autograd(lambda x, weight, bias: nhwc(F.batch_norm(nchw(x), bn.running_mean, bn.running_var,
                                                                     weight, bias, training=True,
                                                                     momentum=bn.momentum, eps=eps)),
                          x, weight, bias, dout=dout)
    assert_close(out, ref, **NORM_GRAD, name="out")
    assert_close(new_mean, bn.running_mean.numpy(), **F32, name="running_mean")
    assert_close(new_var, bn.running_var.numpy(), **F32, name="running_var")
    for name, ours, theirs in zip(("dx", "dweight", "dbias"), bw.batch_norm_backward(dout, cache), grads):
        assert_close(ours, theirs, **NORM_GRAD, name=name)
    assert running_mean is not new_mean and out.dtype == new_var.dtype == np.float32


def test_batch_norm_training_needs_two_values_per_channel():
    one = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bw.batch_norm_forward(np.ones((1, 1, 1, 3), np.float32), one, one, one, one, 1e-3, momentum=0.1)


# -- squeeze-excitation and pooling ------------------------------------------------------------


@given(b=st.sampled_from([1, 2]), h=st.integers(1, 6), w=st.integers(1, 6), c=small_sizes, s=tiny_sizes, seed=seeds)
def test_squeeze_excite_backward_matches_torch(b, h, w, c, s, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, b, h, w, c, scale=2.0)
    w_reduce, b_reduce = randn(rng, s, c, 1, 1), randn(rng, s)
    w_expand, b_expand = randn(rng, c, s, 1, 1), randn(rng, c)
    dout = randn(rng, b, h, w, c)
    out, cache = bw.squeeze_excite_forward(x, w_reduce, b_reduce, w_expand, b_expand)
    assert_close(out, squeeze_excite(x, w_reduce, b_reduce, w_expand, b_expand), **TOLERANCES["float32"],
                 name="squeeze_excite forward")

    def reference(x, w_reduce, b_reduce, w_expand, b_expand):  # transformers' AlignVisionSqueezeExciteLayer
        x = nchw(x)
        gate = torch.sigmoid(F.conv2d(F.silu(F.conv2d(x.mean((2, 3), keepdim=True), w_reduce, b_reduce)),
                                      w_expand, b_expand))
        return nhwc(x * gate)

    ref, grads = autograd(reference, x, w_reduce, b_reduce, w_expand, b_expand, dout=dout)
    assert_close(out, ref, **F32, name="out")
    names = ("dx", "dw_reduce", "db_reduce", "dw_expand", "db_expand")
    for name, ours, theirs in zip(names, bw.squeeze_excite_backward(dout, cache), grads):
        assert_close(ours, theirs, **GRAD, name=name)


@given(b=tiny_sizes, h=small_sizes, w=tiny_sizes, c=small_sizes, seed=seeds)
def test_global_mean_pool_backward_matches_torch(b, h, w, c, seed):
    rng = np.random.default_rng(seed)
    x, dout = randn(rng, b, h, w, c), randn(rng, b, c)
    out, cache = bw.global_pool_forward(x)
    ref, (dx,) = autograd(lambda x: x.mean((1, 2)), x, dout=dout)
    assert_close(out, ref, **F32, name="out")
    assert_close(bw.global_pool_backward(dout, cache), dx, **GRAD, name="dx")
    with pytest.raises(ValueError, match="only mean pooling"):
        bw.global_pool_forward(x, "max")


# -- L2 normalisation, logits and the ALIGN loss -----------------------------------------------


@given(n=small_sizes, d=small_sizes, scale=st.sampled_from([0.1, 1.0, 20.0]), seed=seeds)
def test_l2_normalize_backward_matches_torch(n, d, scale, seed):
    rng = np.random.default_rng(seed)
    x, dout = randn(rng, n, d, scale=scale) + np.float32(0.1), randn(rng, n, d)
    out, cache = bw.l2_normalize_forward(x)
    ref, (dx,) = autograd(lambda x: x / x.norm(dim=-1, keepdim=True), x, dout=dout)
    assert_close(out, ref, **F32, name="out")
    # dx scales like 1/||x||: compare relative to that scale.
    assert_close(bw.l2_normalize_backward(dout, cache) * scale, dx * scale, **GRAD, name="dx")


@given(n=small_sizes, c=small_sizes, eps=st.sampled_from([0.0, 0.1, 0.5]), seed=seeds)
def test_cross_entropy_backward_matches_torch(n, c, eps, seed):
    rng = np.random.default_rng(seed)
    logits, targets = randn(rng, n, c, scale=3.0), rng.integers(0, c, n)
    value, cache = bw.cross_entropy_forward(logits, targets, eps)
    ref, (dlogits,) = autograd(lambda z: F.cross_entropy(z, torch.from_numpy(targets), label_smoothing=eps),
                               logits, dout=2.5)
    assert_close(value, ref, **F32, name="loss")
    assert_close(bw.cross_entropy_backward(2.5, cache), dlogits, **GRAD, name="dlogits")


def test_align_loss_backward_hand_case():
    # All logits equal: the loss is log N, and both softmaxes are uniform, P = 1/N everywhere.
    # The smoothed target is Q = 0.9 I + 0.1/N, so each direction's gradient is (P - Q) / N (the
    # mean over N rows); the two directions, each weighted 1/2, add up to one such term:
    # (1/N - 0.1/N - 0.9 [i == j]) / N.
    n = 4
    value, cache = bw.align_loss_forward(np.zeros((n, n), np.float32))
    assert_close(value, math.log(n), atol=1e-6, rtol=0)
    expected = (np.full((n, n), 1 / n - 0.1 / n) - 0.9 * np.eye(n)) / n
    assert_close(bw.align_loss_backward(1.0, cache), expected, atol=1e-7, rtol=0)


@given(n=small_sizes, d=st.sampled_from([1, 3, 16]), temperature=st.sampled_from([1.0, 0.05, 2.3]), seed=seeds)
def test_align_logits_and_loss_backward_match_transformers(n, d, temperature, seed):
    """The whole contrastive head: raw embeddings -> L2-normalise -> logits / temperature ->
    transformers' align_loss, backward to both embeddings and the temperature."""
    from transformers.models.align.modeling_align import align_loss

    rng = np.random.default_rng(seed)
    text, image = randn(rng, n, d) + np.float32(0.2), randn(rng, n, d) - np.float32(0.2)
    tau = np.float32(temperature)
    t, t_cache = bw.l2_normalize_forward(text)
    v, v_cache = bw.l2_normalize_forward(image)
    logits, logits_cache = bw.align_logits_forward(t, v, tau)
    value, loss_cache = bw.align_loss_forward(logits)
    assert value == loss.align_loss(logits)
    dlogits = bw.align_loss_backward(1.0, loss_cache)
    dt, dv, dtau = bw.align_logits_backward(dlogits, logits_cache)
    dtext, dimage = bw.l2_normalize_backward(dt, t_cache), bw.l2_normalize_backward(dv, v_cache)

    def reference(text, image, tau):  # AlignModel.forward's tail, as transformers writes it
        t = text / text.norm(p=2, dim=-1, keepdim=True)
        v = image / image.norm(p=2, dim=-1, keepdim=True)
        return align_loss(torch.matmul(t, v.t()) / tau)

    ref, grads = autograd(reference, text, image, tau, dout=1.0)
    assert_close(value, ref, **F32, name="loss")
    assert dlogits.dtype == dtext.dtype == dimage.dtype == dtau.dtype == np.float32
    # Gradients scale like 1/temperature: compare relative to that scale.
    for name, ours, theirs in zip(("dtext_embeds", "dimage_embeds", "dtemperature"), (dtext, dimage, dtau), grads):
        assert_close(ours * tau, theirs * temperature, **GRAD, name=name)


# -- finite differences ------------------------------------------------------------------------


def test_batch_norm_backward_matches_finite_differences():
    """Torch-free check of the layer with the most intricate gradient (three paths to every x).

    In float64 (the functions are dtype-generic: float32 in, float32 out; float64 in, float64
    out), the central difference (L(p + hV) - L(p - hV)) / 2h of L = sum(out * R) along random
    directions V equals <dL/dp, V> up to O(h^2) ~ 1e-10 and rounding ~ 1e-16 / h.
    """
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 5, 4)) * 2 + 1
    weight, bias = 1 + 0.3 * rng.standard_normal(4), rng.standard_normal(4)
    stats = (np.zeros(4), np.ones(4))
    r = rng.standard_normal(x.shape)

    def objective(x, weight, bias):
        return np.sum(bw.batch_norm_forward(x, weight, bias, *stats, 1e-3, momentum=0.1)[0] * r)

    _, cache, _, _ = bw.batch_norm_forward(x, weight, bias, *stats, 1e-3, momentum=0.1)
    grads = bw.batch_norm_backward(r, cache)
    assert grads[0].dtype == np.float64
    params, h = [x, weight, bias], 1e-5
    for index, grad in enumerate(grads):
        for _ in range(3):
            direction = rng.standard_normal(params[index].shape)
            plus = [p + h * direction if i == index else p for i, p in enumerate(params)]
            minus = [p - h * direction if i == index else p for i, p in enumerate(params)]
            numeric = (objective(*plus) - objective(*minus)) / (2 * h)
            assert_close(np.sum(grad * direction), numeric, atol=1e-7, rtol=1e-7, name=f"grad {index}")


@pytest.mark.parametrize("name", sorted(bw.ACTIVATION_PAIRS))
def test_every_trainable_activation_matches_transformers(name):
    """Each name training accepts, aliases included, against transformers' own function for that
    name (ACT2FN) and torch's autograd through it."""
    from transformers.activations import ACT2FN

    from minialign.backends.contract import ACTIVATION_NAMES

    assert name in ACTIVATION_NAMES
    forward, backward = bw.activation_pair(name)
    rng = np.random.default_rng(7)
    x, dout = randn(rng, 5, 11, scale=4.0), randn(rng, 5, 11)
    x[0, :3] = [0.0, 6.0, -3.0]  # relu's and relu6's corners: torch's choice of derivative there
    out, cache = forward(x)
    ref, (dx,) = autograd(ACT2FN[name], x, dout=dout)
    assert_close(out, ref, **F32, name=f"{name} out")
    assert_close(backward(dout, cache), dx, **GRAD, name=f"{name} dx")


def test_an_activation_without_a_backward_is_refused_by_name():
    with pytest.raises(ValueError, match=r"training has no backward pass for the activation 'mish'; activations "
                                         r"minialign can train: \['gelu'"):
        bw.activation_pair("mish")
