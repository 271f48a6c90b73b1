"""The reference backend: every op of ALIGN's architecture as the plain math, in NumPy.

This is the file to read to learn what the model computes. Each function's first line states
the shapes, its docstring the formula, and its body computes that formula in the same order.
It is slow on purpose: no threads, no blocking, no strided-view tricks. The fast backends
(``backends/numpy.py`` on the CPU, ``backends/triton.py`` on a GPU) are tested against it.

Layouts are transformers': a linear weight is ``[out, in]``, a convolution ``[Cout, Cin, k, k]``,
a depthwise one ``[C, 1, k, k]``; vision activations are channels-last ``[B, H, W, C]`` (see
``contract.py``). Everything computes in float32, like the torch reference.
"""

from __future__ import annotations

import math

import numpy as np

from .contract import CONV_ACTIVATIONS, Padding, check_activation

NAME = "reference"
PACK_TEXT = False  # get_text_features' default: length buckets (see contract.Ops.PACK_TEXT)

# -- arrays in and out ---------------------------------------------------------------------------


def from_numpy(array) -> np.ndarray:
    """Floats as float32 (NumPy's default float64 would make "same as torch" hold for the wrong
    reason), integers unchanged."""
    array = np.asarray(array)
    return array.astype(np.float32, copy=False) if np.issubdtype(array.dtype, np.floating) else array


def prepare_weight(array, op: str, argument: str) -> np.ndarray:
    """A weight for ``op``'s ``argument``: the plain math reads each weight as the checkpoint
    stores it, so this is from_numpy (the Triton backend lays some out for its kernels here)."""
    return from_numpy(array)


def to_numpy(x: np.ndarray) -> np.ndarray:
    return np.asarray(x)


def is_floating_point(x: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(x).dtype, np.floating)


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:  # [B, C, H, W] -> [B, H, W, C]
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:  # [B, H, W, C] -> [B, C, H, W], a view
    return x.transpose(0, 3, 1, 2)


# -- activations -----------------------------------------------------------------------------------

# Numerical Recipes (2nd ed., 6.2, "erfcc"): erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), z >= 0,
# with P the polynomial of these coefficients (lowest power first); fractional error < 1.2e-7.
ERFC_COEFFS = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
               0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)
# Taylor series of erf near 0: erf(x) = 2/sqrt(pi) * sum_n c_n x^(2n+1), c_n = (-1)^n / (n! (2n+1));
# for |x| < 0.5 seven terms leave a truncation error under 1e-9 relative.
ERF_SERIES_COEFFS = tuple((-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(7))


def erf(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt (NumPy has none), in two pieces:

        |x| <  0.5:  2/sqrt(pi) * sum_{n<7} c_n x^(2n+1)     Taylor series, ERF_SERIES_COEFFS
        |x| >= 0.5:  sign(x) * (1 - erfc(|x|))               erfc from ERFC_COEFFS

    Near 0, 1 - erfc would lose the relative accuracy that the series keeps (erf(x) ~ 1.13 x).
    """
    z = np.abs(x)
    t = 1 / (1 + np.float32(0.5) * z)
    poly = sum(np.float32(c) * t**n for n, c in enumerate(ERFC_COEFFS))
    large = np.sign(x) * (1 - t * np.exp(-z * z + poly))
    xs = np.clip(x, -0.5, 0.5)  # the series is used only there; outside, x^13 would overflow
    series = sum(np.float32(c) * xs ** (2 * n + 1) for n, c in enumerate(ERF_SERIES_COEFFS))
    return np.where(z < 0.5, np.float32(2 / math.sqrt(math.pi)) * series, large).astype(np.float32)


def gelu(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """GELU, exact form (BERT's "gelu"): x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))."""
    return np.float32(0.5) * x * (1 + erf(x / np.float32(math.sqrt(2))))


def gelu_new(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """GELU, tanh approximation (GPT-2's "gelu_new"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    c = np.float32(math.sqrt(2 / math.pi))
    return np.float32(0.5) * x * (1 + np.tanh(c * (x + np.float32(0.044715) * x**3)))


def relu(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """max(x, 0)."""
    return np.maximum(x, 0)


def tanh(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """Hyperbolic tangent (the BERT pooler's activation)."""
    return np.tanh(x)


def sigmoid(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """1 / (1 + exp(-x)). exp(-x) overflows to inf for x < -88, and 1 / inf = 0 is the right limit."""
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def silu(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """SiLU (swish): x * sigmoid(x)."""
    return x * sigmoid(x)


# The rest of transformers' activation table (transformers/activations.py, ACT2FN). ALIGN's
# checkpoints use only "gelu" (the text tower) and "swish" (the vision tower); a config may name
# any of these, and each is one line of math.


def quick_gelu(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """GELU through a sigmoid (CLIP's "quick_gelu"): x * sigmoid(1.702 x)."""
    return x * sigmoid(np.float32(1.702) * x)


def gelu_10(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """GELU clipped to [-10, 10] (for quantisation): clip(gelu(x), -10, 10)."""
    return np.clip(gelu(x), -10, 10)


def relu6(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """min(max(x, 0), 6) (MobileNet's)."""
    return np.clip(x, 0, 6)


def relu2(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """Squared ReLU: max(x, 0)^2."""
    return relu(x) ** 2


def leaky_relu(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """x for x > 0, 0.01 x otherwise (torch's default negative slope)."""
    return np.where(x > 0, x, np.float32(0.01) * x)


def hardswish(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """SiLU with a piecewise-linear gate (MobileNetV3): x * relu6(x + 3) / 6."""
    return x * relu6(x + 3) / 6


def softplus(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """log(1 + exp(x)), written max(x, 0) + log(1 + exp(-|x|)) so that exp never overflows."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def mish(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """x * tanh(softplus(x)) (Misra 2019)."""
    return x * np.tanh(softplus(x))


def sqrtsoftplus(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """sqrt(softplus(x))."""
    return np.sqrt(softplus(x))


def laplace(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """The Gaussian CDF of N(mu, sigma^2) at x, with transformers' mu = 0.707107 and sigma = 0.282095:
    0.5 (1 + erf((x - mu) / (sigma sqrt 2)))."""
    return np.float32(0.5) * (1 + erf((x - np.float32(0.707107)) / np.float32(0.282095 * math.sqrt(2))))


def identity(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """x (transformers' "linear" activation)."""
    return x


# Name -> function, transformers' spelling (contract.ACTIVATION_NAMES). Several names are one
# function: "swish" is SiLU; "gelu_python" is the erf GELU written out; "gelu_pytorch_tanh",
# "gelu_python_tanh", "gelu_accurate" and "gelu_fast" are the tanh approximation of gelu_new,
# written in other orders (the same value to float32 rounding).
ACTIVATIONS = {
    "gelu": gelu, "gelu_python": gelu, "gelu_new": gelu_new, "gelu_pytorch_tanh": gelu_new,
    "gelu_python_tanh": gelu_new, "gelu_accurate": gelu_new, "gelu_fast": gelu_new, "gelu_10": gelu_10,
    "quick_gelu": quick_gelu, "relu": relu, "relu2": relu2, "relu6": relu6, "leaky_relu": leaky_relu,
    "silu": silu, "swish": silu, "hardswish": hardswish, "mish": mish, "tanh": tanh, "sigmoid": sigmoid,
    "laplace": laplace, "sqrtsoftplus": sqrtsoftplus, "linear": identity,
}


def _bias_act(y: np.ndarray, bias: np.ndarray | None, activation: str | None) -> np.ndarray:
    """act(y + bias), with either one optional: the epilogue of every layer with weights."""
    y = y if bias is None else y + bias
    return y if activation is None else ACTIVATIONS[activation](y)


# -- text ------------------------------------------------------------------------------------------


def embedding(ids: np.ndarray, table: np.ndarray) -> np.ndarray:  # [...] int, [V, H] -> [..., H]
    """Row lookup: out[..., :] = table[ids[...], :]."""
    return table[ids]


def add(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # [...], [...] -> [...]
    """x + y."""
    return x + y


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
           activation: str | None = None) -> np.ndarray:  # [..., in], [out, in], [out] -> [..., out]
    """y = act(x W^T + b), W stored [out, in] like torch's nn.Linear."""
    check_activation(activation)
    return _bias_act(x @ weight.T, bias, activation)


def prepare_linears(weights, biases) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    # n x [out_i, in], n x [out_i] -> n x ([out_i, in], [out_i])
    """The weights as they are, paired: ``linears`` runs each linear on its own."""
    return tuple(zip(weights, biases, strict=True))


def linears(x: np.ndarray, prepared) -> tuple[np.ndarray, ...]:  # [..., in] -> n x [..., out_i]
    """(linear(x, W_1, b_1), ..., linear(x, W_n, b_n)): several projections of one input (BERT's
    query, key and value), ``prepared`` from ``prepare_linears``."""
    return tuple(linear(x, weight, bias) for weight, bias in prepared)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    # [..., H], [H], [H] -> [..., H]
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis, var the biased (population)
    variance as in torch, taken as the mean of squared deviations (accurate when |mean| >> std)."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + np.float32(eps)) * weight + bias


def add_layer_norm(x: np.ndarray, residual: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                   eps: float) -> np.ndarray:  # [..., H], [..., H], [H], [H] -> [..., H]
    """layer_norm(x + residual): BERT's post-norm residual connection."""
    return layer_norm(x + residual, weight, bias, eps)


def linear_add_layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, residual: np.ndarray,
                          norm_weight: np.ndarray, norm_bias: np.ndarray, eps: float) -> np.ndarray:
    # [..., in], [H, in], [H], [..., H], [H], [H] -> [..., H]
    """LayerNorm(dense(x) + residual): how each BERT sublayer ends (BertSelfOutput, BertOutput)."""
    return add_layer_norm(linear(x, weight, bias), residual, norm_weight, norm_bias, eps)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:  # [...] -> [...]
    """exp(x - max) / sum(exp(x - max)): the max changes nothing but keeps exp from overflowing."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attention_bias(attention_mask: np.ndarray) -> np.ndarray:  # [B, S] of {0, 1} -> [B, 1, 1, S] float32
    """0 for a real key, the most negative float32 for a padded one (as transformers): after the
    softmax a padded key's weight is exactly 0. (A row of only padding gets a uniform softmax --
    harmless, no one reads such a sequence's outputs.)"""
    return np.where(attention_mask[:, None, None, :] != 0, 0.0, np.finfo(np.float32).min).astype(np.float32)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: np.ndarray | None):
    # [B, h, T, d], [B, h, S, d], [B, h, S, d], [B, 1, 1, S] -> ([B, h, T, d], [B, h, T, S])
    """Scaled dot-product attention: P = softmax(q k^T / sqrt(d) + bias), out = P v.
    Returns (out, P)."""
    scores = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(q.shape[-1]))
    probs = softmax(scores if bias is None else scores + bias)
    return probs @ v, probs


def multi_head_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, attention_mask: np.ndarray,
                         num_heads: int, *, return_probs: bool = False):
    # [B, T, H] x 3, [B, T] of {0, 1} -> ([B, T, H], [B, heads, T, T] or None)
    """Split H into heads x d, attend per head with padded keys masked, merge the heads back."""
    B, T, H = q.shape

    def split_heads(y):  # [B, T, H] -> [B, heads, T, d]
        return y.reshape(B, T, num_heads, H // num_heads).transpose(0, 2, 1, 3)

    context, probs = attention(split_heads(q), split_heads(k), split_heads(v), attention_bias(attention_mask))
    return context.transpose(0, 2, 1, 3).reshape(B, T, H), (probs if return_probs else None)


def packed_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, cu_seqlens: np.ndarray, max_seqlen: int,
                     num_heads: int) -> np.ndarray:
    # [N, H] x 3, [B + 1] int, - -> [N, H]
    """multi_head_attention of each packed sequence on its own: sequence b is rows
    cu_seqlens[b] .. cu_seqlens[b + 1], every one a real token, so no mask is needed. A loop over
    the sequences (``max_seqlen`` is what a kernel sizes its tiles by; the loop needs none)."""
    out = np.zeros_like(q)
    for start, end in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
        if end == start:
            continue  # an empty sequence has no query
        rows = slice(start, end)
        real = np.ones((1, end - start), dtype=np.int64)
        context, _ = multi_head_attention(q[None, rows], k[None, rows], v[None, rows], real, num_heads)
        out[rows] = context[0]
    return out


def scatter_rows(x: np.ndarray, index: np.ndarray, num_rows: int) -> np.ndarray:  # [N, H], [N] int, R -> [R, H]
    """out = zeros([R, H]); out[index[i]] = x[i]: packed rows back to their places in a padded batch."""
    out = np.zeros((num_rows, x.shape[-1]), dtype=x.dtype)
    out[index] = x
    return out


# -- vision: convolutions, channels-last -------------------------------------------------------------


def pad_hw(x: np.ndarray, padding: Padding) -> np.ndarray:
    # [B, H, W, C] -> [B, H + top + bottom, W + left + right, C]
    """Zeros around height and width, ``padding`` = (top, bottom, left, right)."""
    top, bottom, left, right = padding
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def tap(x_pad: np.ndarray, i: int, j: int, stride: int, out_h: int, out_w: int) -> np.ndarray:
    # [B, Hp, Wp, C] -> [B, Ho, Wo, C], a view
    """Tap (i, j) of every output pixel: tap[b, y, x] = x_pad[b, y*stride + i, x*stride + j]."""
    return x_pad[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride]


def conv_output_size(size: int, kernel_size: int, stride: int) -> int:
    """Output length of a convolution over ``size`` already padded positions."""
    return (size - kernel_size) // stride + 1


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: Padding = (0, 0, 0, 0), *,
           bias: np.ndarray | None = None, activation: str | None = None) -> np.ndarray:
    # [B, H, W, Cin], [Cout, Cin, k, k], [Cout] -> [B, Ho, Wo, Cout]
    """out[b, y, x, o] = act(sum_{i, j, c} x_pad[b, y*s + i, x*s + j, c] * weight[o, c, i, j] + bias[o]),
    summed tap by tap: each tap is a [B, Ho, Wo, Cin] @ [Cin, Cout] product."""
    check_activation(activation, CONV_ACTIVATIONS)
    k, x_pad = weight.shape[-1], pad_hw(x, padding)
    Ho, Wo = conv_output_size(x_pad.shape[1], k, stride), conv_output_size(x_pad.shape[2], k, stride)
    out = sum(tap(x_pad, i, j, stride, Ho, Wo) @ weight[:, :, i, j].T for i in range(k) for j in range(k))
    return _bias_act(out, bias, activation)


def pointwise_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *,
                   activation: str | None = None, input_scale: np.ndarray | None = None,
                   residual: np.ndarray | None = None) -> np.ndarray:
    # [B, H, W, Cin], [Cout, Cin, 1, 1], [Cout], -, [B, Cin], [B, H, W, Cout] -> [B, H, W, Cout]
    """A 1x1 convolution, a linear map at every pixel:

        out[b, y, x, :] = act((x[b, y, x, :] * input_scale[b]) @ W^T + bias) + residual[b, y, x, :]

    ``input_scale`` is the squeeze-excitation gate of an MBConv block, one factor per (image,
    input channel); ``residual`` is the block's skip connection."""
    check_activation(activation, CONV_ACTIVATIONS)
    if input_scale is not None:
        x = x * input_scale[:, None, None, :]
    out = _bias_act(x @ weight[:, :, 0, 0].T, bias, activation)
    return out if residual is None else out + residual


def depthwise_conv2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: Padding = (0, 0, 0, 0), *,
                     bias: np.ndarray | None = None, activation: str | None = None, return_means: bool = False):
    # [B, H, W, C], [C, 1, k, k], [C] -> [B, Ho, Wo, C]  (and [B, C] with return_means)
    """Each channel filtered by its own k x k kernel:

        out[b, y, x, c] = act(sum_{i, j} x_pad[b, y*s + i, x*s + j, c] * weight[c, 0, i, j] + bias[c])

    and, with ``return_means``, mean_{y, x} out[b, y, x, c] as well (the squeeze of the
    squeeze-excitation that follows in an MBConv block)."""
    check_activation(activation, CONV_ACTIVATIONS)
    k, x_pad = weight.shape[-1], pad_hw(x, padding)
    Ho, Wo = conv_output_size(x_pad.shape[1], k, stride), conv_output_size(x_pad.shape[2], k, stride)
    out = sum(tap(x_pad, i, j, stride, Ho, Wo) * weight[:, 0, i, j] for i in range(k) for j in range(k))
    out = _bias_act(out, bias, activation)
    return (out, out.mean(axis=(1, 2))) if return_means else out


def batch_norm(x: np.ndarray, weight, bias, running_mean, running_var, eps: float) -> np.ndarray:
    # [..., C], [C] x 4 -> [..., C]
    """Eval-mode batchnorm over the channel (last) axis: (x - mean) / sqrt(var + eps) * weight + bias."""
    return (x - running_mean) / np.sqrt(running_var + np.float32(eps)) * weight + bias


def fold_batch_norm(conv_weight: np.ndarray, weight, bias, running_mean, running_var,
                    eps: float) -> tuple[np.ndarray, np.ndarray]:
    # [Cout, Cin/groups, k, k], [Cout] x 4 -> [Cout, Cin/groups, k, k], [Cout]
    """Fold an eval-mode batchnorm into the convolution before it. With scale = weight /
    sqrt(running_var + eps) and shift = bias - running_mean * scale,

        batch_norm(conv(x, W)) = conv(x, W) * scale + shift = conv(x, W * scale) + shift

    since scaling an output channel of a convolution scales its filter. Exact in real arithmetic
    (float32 rounds differently, by ~1 ulp); done once per model, not once per image."""
    scale = weight / np.sqrt(running_var + np.float32(eps))
    shift = bias - running_mean * scale
    return (conv_weight * scale[:, None, None, None]).astype(np.float32), shift.astype(np.float32)


def squeeze_excite_gate(pooled: np.ndarray, w_reduce, b_reduce, w_expand, b_expand, *,
                        activation: str = "silu") -> np.ndarray:
    # [B, C], [S, C, 1, 1], [S], [C, S, 1, 1], [C] -> [B, C]
    """g = sigmoid(W_e act(W_r s + b_r) + b_e): a factor in (0, 1) per (image, channel) from the
    image's channel means s (see squeeze_excite); ``act`` is the tower's hidden_act, SiLU in ALIGN."""
    hidden = linear(pooled, w_reduce[:, :, 0, 0], b_reduce, activation)  # [B, S]
    return sigmoid(linear(hidden, w_expand[:, :, 0, 0], b_expand))


def squeeze_excite(x: np.ndarray, w_reduce, b_reduce, w_expand, b_expand, *, activation: str = "silu") -> np.ndarray:
    # [B, H, W, C], [S, C, 1, 1], [S], [C, S, 1, 1], [C] -> [B, H, W, C]
    """Squeeze-and-excitation (Hu et al. 2018): reweight channels by a gate from the whole image.

        s = mean_{y, x} x[b, y, x, :]                  squeeze     [B, C]
        g = sigmoid(W_e silu(W_r s + b_r) + b_e)       excite      [B, C]   (silu: the tower's hidden_act)
        out[b, y, x, c] = x[b, y, x, c] * g[b, c]

    The vision tower computes it in pieces: s with depthwise_conv2d(return_means=True), g with
    squeeze_excite_gate, and the product inside the next pointwise_conv (``input_scale``)."""
    gate = squeeze_excite_gate(x.mean(axis=(1, 2)), w_reduce, b_reduce, w_expand, b_expand, activation=activation)
    return x * gate[:, None, None, :]


def global_pool(x: np.ndarray, kind: str) -> np.ndarray:  # [B, H, W, C] -> [B, C]
    """Mean or max over all pixels."""
    if kind not in ("mean", "max"):
        raise ValueError(f"kind must be 'mean' or 'max', got {kind!r}")
    return x.mean(axis=(1, 2)) if kind == "mean" else x.max(axis=(1, 2))
