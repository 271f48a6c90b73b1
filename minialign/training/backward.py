"""Hand-written backward passes for every layer ALIGN training needs (llm.c style).

Each layer is a pair of functions:

    out, cache = <layer>_forward(inputs..., params...)
    grads      = <layer>_backward(dout, cache)

- The forward calls the op that inference runs by default (``backends/numpy.py``, the fast
  NumPy backend) or ``loss.py`` (so the numbers a trained model sees are the numbers inference
  computes, and inference pays nothing for training), and keeps in ``cache`` only what the
  backward needs. Where the inference function
  does not hand out an intermediate (layer_norm's mean and 1/std, conv2d's patch matrix), the
  backward recomputes it from the cached input: a reduction or a copy, cheap next to the layer.
- The backward returns the gradient of the loss with respect to every float argument of the
  forward: a single array when there is one, else a tuple with the input gradients first, then
  the parameter gradients in the forward's argument order (``None`` for an optional argument
  that was ``None``). Each function's docstring states its order.
- Shapes and layouts are those of the forward: weights as transformers stores them (a linear
  weight ``[out, in]``, a conv weight ``[Cout, Cin, k, k]``, a depthwise one ``[C, 1, k, k]``),
  vision activations channels-last ``[B, H, W, C]``; a parameter's gradient has the parameter's
  shape. Everything stays float32 for float32 inputs (the functions add no float64 constant).

Notation: ``dy`` (``dout``) is dL/d(out) for some scalar loss L; ``dx`` is dL/dx. Sums "over
pixels" are over (b, y, x), "over rows" over every leading axis.
"""

from __future__ import annotations

import math

import numpy as np

from .. import loss
from ..backends import numpy as fast
from ..backends import reference
from ..backends.contract import Padding

# ----------------------------------------------------------------------------------------------
# helpers shared by several layers
# ----------------------------------------------------------------------------------------------


def _sum_rows(a: np.ndarray) -> np.ndarray:  # [..., n] -> [n]
    """Sum over every leading axis: the gradient of a parameter broadcast over them (a bias)."""
    return a.reshape(-1, a.shape[-1]).sum(axis=0)


def _normalize_backward(g: np.ndarray, x_hat: np.ndarray, rstd: np.ndarray, axis) -> np.ndarray:
    """The backward of x_hat = (x - mean(x)) * rstd, rstd = 1 / sqrt(var(x) + eps), with the mean
    and the biased variance taken over ``axis``, given g = dL/dx_hat:

        dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))

    The three terms: the direct path, the path through the mean (every x moves the mean by 1/n),
    the path through the variance (d var / dx = 2 (x - mean) / n). layer_norm (over the last axis)
    and training-mode batch_norm (over the pixels of each channel) share it.
    """
    mean_g = g.mean(axis=axis, keepdims=True)
    mean_gx = (g * x_hat).mean(axis=axis, keepdims=True)
    return rstd * (g - mean_g - x_hat * mean_gx)


def _crop_hw(x_pad: np.ndarray, padding: Padding) -> np.ndarray:
    # [B, Hp, Wp, C] -> [B, Hp - top - bottom, Wp - left - right, C]
    """Undo ``reference.pad_hw``: the gradient that reaches the zero padding belongs to no input."""
    top, bottom, left, right = padding
    return x_pad[:, top:x_pad.shape[1] - bottom, left:x_pad.shape[2] - right]


# ----------------------------------------------------------------------------------------------
# embedding, linear, layer norm
# ----------------------------------------------------------------------------------------------


def embedding_forward(ids: np.ndarray, table: np.ndarray):
    # [...] int, [V, H] -> [..., H]
    """out[..., :] = table[ids[...], :] (``reference.embedding``)."""
    return fast.embedding(ids, table), (ids, table.shape)


def embedding_backward(dout: np.ndarray, cache) -> np.ndarray:
    # [..., H] -> dtable [V, H]
    """dtable[v] = sum of dout over the positions whose id is v; rows never looked up get 0.

    Scattered with ``np.add.at``, not ``dtable[ids] += dout``: fancy-index ``+=`` is buffered --
    it reads dtable[ids], adds, and writes back, so when an id occurs twice (a [PAD] or "the" in
    a batch always does) the second write overwrites the first and one contribution is lost.
    ``np.add.at`` is unbuffered and adds every occurrence. (The ids get no gradient.)
    """
    ids, table_shape = cache
    dtable = np.zeros(table_shape, dtype=dout.dtype)
    np.add.at(dtable, ids.reshape(-1), dout.reshape(-1, table_shape[1]))
    return dtable


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None):
    # [..., in], [out, in], [out] -> [..., out]
    """y = x W^T + b (``reference.linear``)."""
    return fast.linear(x, weight, bias), (x, weight, bias is not None)


def linear_backward(dout: np.ndarray, cache):
    # [..., out] -> (dx [..., in], dweight [out, in], dbias [out] or None)
    """With the leading axes flattened into rows (x: [N, in], dy: [N, out]):

        dx = dy W            dW = dy^T x            db = sum_rows dy

    Returns (dx, dweight, dbias).
    """
    x, weight, has_bias = cache
    dout2d = dout.reshape(-1, weight.shape[0])  # [N, out]
    dx = (dout2d @ weight).reshape(x.shape)  # [N, in] -> [..., in]
    dweight = dout2d.T @ x.reshape(-1, weight.shape[1])  # [out, N] @ [N, in]
    dbias = dout2d.sum(axis=0) if has_bias else None
    return dx, dweight, dbias


def layer_norm_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float):
    # [..., H], [H], [H] -> [..., H]
    """y = x_hat * gamma + beta, x_hat = (x - mean) / sqrt(var + eps) over the last axis
    (``reference.layer_norm``). llm.c caches mean and 1/std; here the backward recomputes them from
    x (two reductions), so that the forward is exactly the inference function."""
    return fast.layer_norm(x, weight, bias, eps), (x, weight, eps)


def layer_norm_backward(dout: np.ndarray, cache):
    # [..., H] -> (dx [..., H], dweight [H], dbias [H])
    """With sigma = sqrt(var + eps) over the last axis and means over that axis:

        dx     = (1/sigma) (dy*gamma - mean(dy*gamma) - x_hat * mean(dy*gamma * x_hat))
        dgamma = sum_rows dy * x_hat
        dbeta  = sum_rows dy

    Returns (dx, dweight, dbias).
    """
    x, weight, eps = cache
    mean = x.mean(axis=-1, keepdims=True)  # [..., 1], the same two passes as reference.layer_norm
    centered = x - mean
    rstd = 1.0 / np.sqrt(np.mean(centered * centered, axis=-1, keepdims=True) + np.float32(eps))
    x_hat = centered * rstd  # [..., H]
    dx = _normalize_backward(dout * weight, x_hat, rstd, axis=-1)
    return dx, _sum_rows(dout * x_hat), _sum_rows(dout)


def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The gradient of an array broadcast to g's shape: g summed over the axes broadcasting added."""
    return g.reshape(-1, *shape).sum(axis=0) if g.shape != shape else g


def add_forward(x: np.ndarray, y: np.ndarray):
    # [...], [...] (or a shape that broadcasts to it) -> [...]
    """out = x + y (the contract's ``add``)."""
    return fast.add(x, y), (x.shape, y.shape)


def add_backward(dout: np.ndarray, cache):
    # [...] -> (dx, dy)
    """Both inputs move the sum one for one: dx = dy_out, dy = dy_out, each summed back to its
    own shape where it was broadcast (the position embeddings [T, H] over a batch [B, T, H])."""
    x_shape, y_shape = cache
    return _unbroadcast(dout, x_shape), _unbroadcast(dout, y_shape)


def add_layer_norm_forward(x: np.ndarray, residual: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float):
    # [..., H], [..., H], [H], [H] -> [..., H]
    """y = layer_norm(x + residual) (the contract's ``add_layer_norm``), as its two layers."""
    total, add_cache = add_forward(x, residual)
    out, norm_cache = layer_norm_forward(total, weight, bias, eps)
    return out, (add_cache, norm_cache)


def add_layer_norm_backward(dout: np.ndarray, cache):
    # [..., H] -> (dx, dresidual, dweight [H], dbias [H])
    """layer_norm's backward, then the sum's: x and the residual get the same gradient.
    Returns (dx, dresidual, dweight, dbias)."""
    add_cache, norm_cache = cache
    dtotal, dweight, dbias = layer_norm_backward(dout, norm_cache)
    return (*add_backward(dtotal, add_cache), dweight, dbias)


# ----------------------------------------------------------------------------------------------
# elementwise activations
# ----------------------------------------------------------------------------------------------

_INV_SQRT_2 = np.float32(1 / math.sqrt(2))
_INV_SQRT_2PI = np.float32(1 / math.sqrt(2 * math.pi))


def gelu_forward(x: np.ndarray):  # [...] -> [...]
    """y = x Phi(x), exact erf form (``reference.gelu``)."""
    return fast.ACTIVATIONS["gelu"](x), x


def gelu_backward(dout: np.ndarray, cache) -> np.ndarray:  # [...] -> dx [...]
    """d/dx [x Phi(x)] = Phi(x) + x phi(x), with Phi(x) = (1 + erf(x / sqrt 2)) / 2 the Gaussian
    CDF and phi(x) = exp(-x^2 / 2) / sqrt(2 pi) its density."""
    x = cache
    cdf = np.float32(0.5) * (1 + fast.erf(x * _INV_SQRT_2))
    pdf = np.exp(np.float32(-0.5) * x * x) * _INV_SQRT_2PI
    return dout * (cdf + x * pdf)


def tanh_forward(x: np.ndarray):  # [...] -> [...]
    """y = tanh(x) (``reference.tanh``, the BERT pooler's activation). Caches y, not x."""
    y = fast.tanh(x)
    return y, y


def tanh_backward(dout: np.ndarray, cache) -> np.ndarray:  # [...] -> dx [...]
    """tanh'(x) = 1 - tanh(x)^2 = 1 - y^2."""
    y = cache
    return dout * (1 - y * y)


def sigmoid_forward(x: np.ndarray):  # [...] -> [...]
    """y = 1 / (1 + exp(-x)) (``reference.sigmoid``). Caches y, not x."""
    y = reference.sigmoid(x)
    return y, y


def sigmoid_backward(dout: np.ndarray, cache) -> np.ndarray:  # [...] -> dx [...]
    """sigma'(x) = sigma(x) (1 - sigma(x)) = y (1 - y)."""
    y = cache
    return dout * y * (1 - y)


def silu_forward(x: np.ndarray):  # [...] -> [...]
    """y = x sigma(x) (``reference.silu``)."""
    return fast.ACTIVATIONS["silu"](x), x


def silu_backward(dout: np.ndarray, cache) -> np.ndarray:  # [...] -> dx [...]
    """d/dx [x sigma(x)] = sigma(x) + x sigma(x) (1 - sigma(x)) = sigma(x) (1 + x (1 - sigma(x)))."""
    x = cache
    s = reference.sigmoid(x)
    return dout * s * (1 + x * (1 - s))


def gelu_new_forward(x: np.ndarray):  # [...] -> [...]
    """y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3) (``reference.gelu_new``)."""
    return fast.ACTIVATIONS["gelu_new"](x), x


def gelu_new_backward(dout: np.ndarray, cache) -> np.ndarray:  # [...] -> dx [...]
    """dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx,  du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    x = cache
    c = np.float32(math.sqrt(2 / math.pi))
    t = np.tanh(c * (x + np.float32(0.044715) * x**3))
    return dout * (np.float32(0.5) * (1 + t) + np.float32(0.5) * x * (1 - t * t) * c * (1 + np.float32(3 * 0.044715) * x * x))


def relu_forward(x: np.ndarray):  # [...] -> [...]
    """y = max(x, 0) (``reference.relu``)."""
    return fast.ACTIVATIONS["relu"](x), x


def relu_backward(dout: np.ndarray, cache) -> np.ndarray:  # [...] -> dx [...]
    """1 where x > 0, else 0 (torch's choice at x = 0)."""
    return dout * (cache > 0)


def quick_gelu_forward(x: np.ndarray):  # [...] -> [...]
    """y = x sigma(1.702 x) (``reference.quick_gelu``)."""
    return fast.ACTIVATIONS["quick_gelu"](x), x


def quick_gelu_backward(dout: np.ndarray, cache) -> np.ndarray:  # [...] -> dx [...]
    """With s = sigma(a x), a = 1.702: d/dx [x s] = s + a x s (1 - s)."""
    x = cache
    s = reference.sigmoid(np.float32(1.702) * x)
    return dout * s * (1 + np.float32(1.702) * x * (1 - s))


def relu6_forward(x: np.ndarray):  # [...] -> [...]
    """y = min(max(x, 0), 6) (``reference.relu6``)."""
    return fast.ACTIVATIONS["relu6"](x), x


def relu6_backward(dout: np.ndarray, cache) -> np.ndarray:  # [...] -> dx [...]
    """1 where 0 < x < 6, else 0 (torch's choice at the two corners)."""
    return dout * ((cache > 0) & (cache < 6))


def identity_forward(x: np.ndarray):  # [...] -> [...]
    """y = x (transformers' "linear" activation)."""
    return x, None


def identity_backward(dout: np.ndarray, cache) -> np.ndarray:  # [...] -> dx [...]
    return dout


# The pair of each activation name of the contract (backends/contract.py's ACTIVATION_NAMES) that
# training supports; aliases share their function's pair. The other names (mish, hardswish, ...)
# have no backward here: activation_pair refuses them, and so does training.
_GELU_TANH = (gelu_new_forward, gelu_new_backward)
ACTIVATION_PAIRS = {
    "gelu": (gelu_forward, gelu_backward), "gelu_python": (gelu_forward, gelu_backward),
    "gelu_new": _GELU_TANH, "gelu_pytorch_tanh": _GELU_TANH, "gelu_python_tanh": _GELU_TANH,
    "gelu_accurate": _GELU_TANH, "gelu_fast": _GELU_TANH, "quick_gelu": (quick_gelu_forward, quick_gelu_backward),
    "relu": (relu_forward, relu_backward), "relu6": (relu6_forward, relu6_backward),
    "silu": (silu_forward, silu_backward), "swish": (silu_forward, silu_backward),
    "tanh": (tanh_forward, tanh_backward), "sigmoid": (sigmoid_forward, sigmoid_backward),
    "linear": (identity_forward, identity_backward),
}


def activation_pair(name: str):
    """(forward, backward) of the activation ``name``; a ValueError naming it and the names that
    have a backward when there is none (the forward-only activations, see ACTIVATION_PAIRS)."""
    if name not in ACTIVATION_PAIRS:
        raise ValueError(f"training has no backward pass for the activation {name!r}; "
                         f"activations minialign can train: {sorted(ACTIVATION_PAIRS)}")
    return ACTIVATION_PAIRS[name]


# ----------------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------------

_MASKED = np.finfo(np.float32).min  # the bias of a padded key (reference.attention_bias)


def softmax_backward(dprobs: np.ndarray, probs: np.ndarray) -> np.ndarray:
    # [..., S], [..., S] -> [..., S]
    """The backward of P = softmax(S) over the last axis: dP/dS = diag(P) - P P^T per row, so

        dS = P * (dP - sum_j dP_j P_j)
    """
    return probs * (dprobs - np.sum(dprobs * probs, axis=-1, keepdims=True))


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: np.ndarray | None):
    # [B, h, T, d], [B, h, S, d], [B, h, S, d], [B, 1, 1, S] -> [B, h, T, d]
    """out = softmax(q k^T / sqrt(d) + bias) v (``reference.attention``), with the additive key
    padding bias of ``reference.attention_bias``. Caches q, k, v and the probabilities P [B, h, T, S]
    (as llm.c does): recomputing P would cost the forward's matrix product again."""
    out, probs = reference.attention(q, k, v, bias)
    masked = None if bias is None else (bias == _MASKED)  # [B, 1, 1, S] bool
    return out, (q, k, v, probs, masked)


def attention_backward(dout: np.ndarray, cache):
    # [B, h, T, d] -> (dq [B, h, T, d], dk [B, h, S, d], dv [B, h, S, d])
    """With S = q k^T / sqrt(d) + bias, P = softmax(S), out = P v:

        dv = P^T dout          dP = dout v^T          dS = P * (dP - rowsum(dP * P))
        dq = dS k / sqrt(d)    dk = dS^T q / sqrt(d)

    Padded keys get exactly zero gradient: dS is zeroed where the bias is the float32 minimum.
    Where a row has a real key, P (and so dS) is already exactly 0 there; in a fully padded row
    (a sequence of only padding) softmax is uniform and P * (dP - ...) is not 0. But in float32
    s + min(float32) == min(float32) for every score, so that row's output does not depend on
    q or k at all: zero is the gradient of the function the forward computes. (Autograd through
    ``s + bias`` differentiates the real-number formula instead and gives such rows nonzero dq,
    dk; their dv, P^T dout, agrees.)

    Returns (dq, dk, dv).
    """
    q, k, v, probs, masked = cache
    scale = np.float32(q.shape[-1] ** -0.5)
    dv = probs.transpose(0, 1, 3, 2) @ dout  # [B, h, S, T] @ [B, h, T, d]
    dprobs = dout @ v.transpose(0, 1, 3, 2)  # [B, h, T, d] @ [B, h, d, S] -> [B, h, T, S]
    dscores = softmax_backward(dprobs, probs)  # [B, h, T, S]
    if masked is not None:
        dscores = np.where(masked, np.float32(0), dscores)
    dq = (dscores @ k) * scale  # [B, h, T, S] @ [B, h, S, d]
    dk = (dscores.transpose(0, 1, 3, 2) @ q) * scale  # [B, h, S, T] @ [B, h, T, d]
    return dq, dk, dv


def multi_head_attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, attention_mask: np.ndarray,
                                 num_heads: int):
    # [B, T, H] x 3, [B, T] of {0, 1} -> [B, T, H]
    """Split H into heads x d, attention_forward per head with the padding bias, merge the heads
    (``reference.multi_head_attention``)."""
    B, T, H = q.shape

    def split_heads(y):  # [B, T, H] -> [B, heads, T, d]
        return y.reshape(B, T, num_heads, H // num_heads).transpose(0, 2, 1, 3)

    context, cache = attention_forward(split_heads(q), split_heads(k), split_heads(v),
                                       reference.attention_bias(attention_mask))
    return context.transpose(0, 2, 1, 3).reshape(B, T, H), cache


def multi_head_attention_backward(dout: np.ndarray, cache):
    # [B, T, H] -> (dq, dk, dv), each [B, T, H]
    """The heads' split and merge are reshapes, so their backward is the inverse reshape around
    attention_backward. Returns (dq, dk, dv)."""
    B, T, H = dout.shape
    heads = cache[0].shape[1]  # q [B, heads, T, d]
    per_head = attention_backward(dout.reshape(B, T, heads, H // heads).transpose(0, 2, 1, 3), cache)
    return tuple(g.transpose(0, 2, 1, 3).reshape(B, T, H) for g in per_head)


# ----------------------------------------------------------------------------------------------
# convolutions, channels-last
# ----------------------------------------------------------------------------------------------


def conv2d_forward(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: Padding = (0, 0, 0, 0),
                   bias: np.ndarray | None = None):
    # [B, H, W, Cin], [Cout, Cin, k, k], -, -, [Cout] -> [B, Ho, Wo, Cout]
    """Dense k x k convolution, the stem (``reference.conv2d``, im2col + one matrix product). The
    activation is a separate layer here (silu_forward): its backward needs its own input."""
    out = fast.conv2d(x, weight, stride, padding, bias=bias)
    return out, (x, weight, stride, padding, bias is not None)


def conv2d_backward(dout: np.ndarray, cache):
    # [B, Ho, Wo, Cout] -> (dx [B, H, W, Cin], dweight [Cout, Cin, k, k], dbias [Cout] or None)
    """The forward is patches [N, Cin*k*k] @ W^T [Cin*k*k, Cout] with N = B*Ho*Wo (im2col), so
    like a linear layer:

        dW       = dy^T patches          [Cout, N] @ [N, Cin*k*k]
        dpatches = dy W                  [N, Cout] @ [Cout, Cin*k*k]
        db       = sum over pixels of dy

    then col2im: each patch entry (c, i, j) of output pixel (y, x) was copied from the padded
    input at (y*s + i, x*s + j, c), so its gradient is added back there -- k*k strided adds of a
    [B, Ho, Wo, Cin] slab, where overlapping windows (stride < k) accumulate -- and the padding's
    share is cropped off. The patch matrix is rebuilt from the cached x (one copy), not cached.

    Returns (dx, dweight, dbias).
    """
    x, weight, stride, padding, has_bias = cache
    cout, cin, k, _ = weight.shape
    x_pad = reference.pad_hw(x, padding)  # [B, Hp, Wp, Cin]
    B, Ho, Wo = dout.shape[:3]
    taps = [(i, j) for i in range(k) for j in range(k)]
    # patches[b, y, x, c, i*k + j] = x_pad[b, y*s + i, x*s + j, c]: (c, i, j) order, as W's [Cin, k, k]
    patches = np.stack([reference.tap(x_pad, i, j, stride, Ho, Wo) for i, j in taps], axis=-1)
    dout2d = dout.reshape(-1, cout)  # [N, Cout]
    dweight = (dout2d.T @ patches.reshape(-1, cin * k * k)).reshape(weight.shape)
    dpatches = (dout2d @ weight.reshape(cout, -1)).reshape(B, Ho, Wo, cin, k * k)
    dx_pad = np.zeros(x_pad.shape, dtype=dout.dtype)
    for t, (i, j) in enumerate(taps):
        reference.tap(dx_pad, i, j, stride, Ho, Wo)[...] += dpatches[..., t]
    dbias = _sum_rows(dout) if has_bias else None
    return _crop_hw(dx_pad, padding), dweight, dbias


def pointwise_conv_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *,
                           input_scale: np.ndarray | None = None):
    # [B, H, W, Cin], [Cout, Cin, 1, 1], [Cout], [B, Cin] -> [B, H, W, Cout]
    """out = (x * g) W^T + b per pixel (``reference.pointwise_conv``), g = ``input_scale`` the
    squeeze-excitation gate folded into an MBConv block's projection (one factor per image and
    input channel), or 1 when None."""
    out = fast.pointwise_conv(x, weight, bias, input_scale=input_scale)
    return out, (x, weight, bias is not None, input_scale)


def pointwise_conv_backward(dout: np.ndarray, cache):
    # [B, H, W, Cout] -> (dx [B, H, W, Cin], dinput_scale [B, Cin] or None,
    #                     dweight [Cout, Cin, 1, 1], dbias [Cout] or None)
    """out[b, p, o] = sum_c x[b, p, c] g[b, c] W[o, c] + b[o] over the pixels p of image b. With
    M_b = dy_b^T x_b [Cout, Cin], the per-image correlation of output and input channels:

        dx[b, p, c] = g[b, c] (dy W)[b, p, c]
        dW[o, c]    = sum_b M_b[o, c] g[b, c]
        dg[b, c]    = sum_o M_b[o, c] W[o, c]
        db[o]       = sum over pixels of dy

    Without a gate (g = 1), dW = sum_b M_b is one [Cout, N] @ [N, Cin] product.

    Returns (dx, dinput_scale, dweight, dbias): the inputs' gradients first, then the weights'.
    """
    x, weight, has_bias, gate = cache
    w = weight.reshape(weight.shape[0], -1)  # [Cout, Cin]
    B, cin, cout = x.shape[0], x.shape[-1], w.shape[0]
    dx = (dout.reshape(-1, cout) @ w).reshape(x.shape)  # [N, Cout] @ [Cout, Cin]
    dbias = _sum_rows(dout) if has_bias else None
    if gate is None:
        dweight = dout.reshape(-1, cout).T @ x.reshape(-1, cin)
        return dx, None, dweight.reshape(weight.shape), dbias
    dx *= gate[:, None, None, :]
    m = dout.reshape(B, -1, cout).transpose(0, 2, 1) @ x.reshape(B, -1, cin)  # [B, Cout, Cin]
    dweight = np.einsum("boc,bc->oc", m, gate)
    dgate = np.einsum("boc,oc->bc", m, w)
    return dx, dgate, dweight.reshape(weight.shape), dbias


def depthwise_conv2d_forward(x: np.ndarray, weight: np.ndarray, stride: int = 1,
                             padding: Padding = (0, 0, 0, 0), bias: np.ndarray | None = None):
    # [B, H, W, C], [C, 1, k, k], -, -, [C] -> [B, Ho, Wo, C]
    """out[b, y, x, c] = sum_{i, j} x_pad[b, y*s + i, x*s + j, c] w[c, 0, i, j] + bias[c]
    (``reference.depthwise_conv2d``; its activation is a separate layer here, see conv2d_forward)."""
    out = fast.depthwise_conv2d(x, weight, stride, padding, bias=bias)
    return out, (x, weight, stride, padding, bias is not None)


def depthwise_conv2d_backward(dout: np.ndarray, cache):
    # [B, Ho, Wo, C] -> (dx [B, H, W, C], dweight [C, 1, k, k], dbias [C] or None)
    """Tap by tap: tap (i, j) multiplied the strided slab x_pad[:, i::s, j::s] ([B, Ho, Wo, C])
    by the per-channel weight w[:, 0, i, j], so

        dw[c, 0, i, j]            = sum over pixels of dy[..., c] * x_pad[tap (i, j)][..., c]
        dx_pad[tap (i, j)]       += dy * w[:, 0, i, j]        (k*k strided adds, then crop)
        db[c]                     = sum over pixels of dy[..., c]

    Overlapping windows (stride < k) accumulate in dx_pad; input pixels no window reaches (the
    last rows when (Hp - k) is not a multiple of s) keep 0.

    Returns (dx, dweight, dbias).
    """
    x, weight, stride, padding, has_bias = cache
    k = weight.shape[-1]
    x_pad = reference.pad_hw(x, padding)  # [B, Hp, Wp, C]
    Ho, Wo = dout.shape[1:3]
    dx_pad = np.zeros_like(x_pad, dtype=dout.dtype)
    dweight = np.empty(weight.shape, dtype=dout.dtype)
    for i in range(k):
        for j in range(k):
            tap = reference.tap(x_pad, i, j, stride, Ho, Wo)
            dweight[:, 0, i, j] = np.einsum("byxc,byxc->c", dout, tap)  # no [B, Ho, Wo, C] temporary
            reference.tap(dx_pad, i, j, stride, Ho, Wo)[...] += dout * weight[:, 0, i, j]
    dbias = _sum_rows(dout) if has_bias else None
    return _crop_hw(dx_pad, padding), dweight, dbias


# ----------------------------------------------------------------------------------------------
# batch norm (training mode)
# ----------------------------------------------------------------------------------------------


def batch_norm_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, running_mean: np.ndarray,
                       running_var: np.ndarray, eps: float, *, momentum: float):
    # [B, H, W, C], [C] x 4 -> ([B, H, W, C], cache, [C], [C])
    """Training-mode batchnorm over [B, H, W, C]: normalise with the batch's statistics over
    (b, y, x) per channel, and update the running statistics. Returns
    ``(out, cache, new_running_mean, new_running_var)``; the arguments are not modified.

        mean = mean over pixels of x,   var = biased (population) variance over pixels
        out  = (x - mean) / sqrt(var + eps) * weight + bias     (reference.batch_norm with the
                                                                 batch's statistics)
        new_running_mean = (1 - momentum) running_mean + momentum mean
        new_running_var  = (1 - momentum) running_var  + momentum var * n / (n - 1)

    n = B*H*W: normalising uses the biased variance, the running estimate the unbiased one (as
    torch; n = 1 has no unbiased variance and raises, as in torch).

    ``momentum`` is in **PyTorch's convention**, the weight of the *new* batch:
    torch ``new = (1 - m) old + m batch`` (default m = 0.1); TensorFlow/Keras write
    ``new = m old + (1 - m) batch`` (default m = 0.99), i.e. torch's m = 1 - Keras's m.
    transformers' ALIGN (modeling_align.py, transformers 5.x) passes
    ``config.batch_norm_momentum = 0.99`` -- a Keras-convention number -- straight into
    ``nn.BatchNorm2d(..., momentum=...)`` for the stem's ``batchnorm``, every block's
    ``depthwise_norm`` and ``project_bn``; so transformers updates those running stats as
    ``0.01 old + 0.99 batch`` (almost the last batch's statistics), where the original TF model
    keeps ``0.99 old + 0.01 batch``. The expansion's ``expand_bn`` gets no momentum argument and
    uses torch's default 0.1. To reproduce transformers pass momentum=0.99 (0.1 for expand_bn);
    to reproduce TF/EfficientNet pass 1 - 0.99 = 0.01. Inference only reads the running stats,
    so this matters only when training.
    """
    n = x.shape[0] * x.shape[1] * x.shape[2]  # B*H*W values per channel
    if n < 2:
        raise ValueError(f"batch_norm in training mode needs more than 1 value per channel, got input {x.shape}")
    mean = x.mean(axis=(0, 1, 2))  # [C]
    centered = x - mean
    var = np.mean(centered * centered, axis=(0, 1, 2))  # [C], biased; two passes like layer_norm
    scale = weight / np.sqrt(var + np.float32(eps))  # [C]
    out = x * scale + (bias - mean * scale)  # = (x - mean) / sqrt(var + eps) * weight + bias, two passes over x
    m = np.float32(momentum)
    new_mean = (1 - m) * running_mean + m * mean
    new_var = (1 - m) * running_var + m * (var * np.float32(n / (n - 1)))
    return out, (x, weight, mean, var, eps), new_mean, new_var


def batch_norm_backward(dout: np.ndarray, cache):
    # [B, H, W, C] -> (dx [B, H, W, C], dweight [C], dbias [C])
    """The layer-norm formula with the statistics over the pixels of each channel (the batch
    statistics depend on every x, so the gradient has the same three paths):

        dx     = (1/sigma) (dy*gamma - mean_pix(dy*gamma) - x_hat * mean_pix(dy*gamma * x_hat))
        dgamma = sum_pix dy * x_hat,      dbeta = sum_pix dy,      sigma = sqrt(var + eps)

    The running-statistics update carries no gradient. Returns (dx, dweight, dbias).
    """
    x, weight, mean, var, eps = cache
    rstd = 1.0 / np.sqrt(var + np.float32(eps))  # [C]
    x_hat = (x - mean) * rstd  # [B, H, W, C]
    dx = _normalize_backward(dout * weight, x_hat, rstd, axis=(0, 1, 2))
    return dx, _sum_rows(dout * x_hat), _sum_rows(dout)


# ----------------------------------------------------------------------------------------------
# squeeze-excitation and pooling
# ----------------------------------------------------------------------------------------------


def global_pool_forward(x: np.ndarray, kind: str = "mean"):
    # [B, H, W, C] -> [B, C]
    """Mean over all pixels (``reference.global_pool``; ALIGN's pooling_type is "mean")."""
    if kind != "mean":
        raise ValueError(f"only mean pooling has a backward here (ALIGN's default), got {kind!r}")
    return fast.global_pool(x, "mean"), x.shape


def global_pool_backward(dout: np.ndarray, cache) -> np.ndarray:
    # [B, C] -> dx [B, H, W, C]
    """Every pixel contributed 1/(H*W) of the mean: dx[b, y, x, c] = dy[b, c] / (H*W)."""
    B, H, W, C = cache
    return np.broadcast_to((dout / np.float32(H * W))[:, None, None, :], (B, H, W, C)).copy()


def squeeze_excite_forward(x: np.ndarray, w_reduce, b_reduce, w_expand, b_expand, *, activation: str = "silu"):
    # [B, H, W, C], [S, C, 1, 1], [S], [C, S, 1, 1], [C] -> [B, H, W, C]
    """Squeeze-and-excitation, the math of ``reference.squeeze_excite``, as a chain of layers, each
    through its forward so that the backward can chain their backwards:

        s = mean over pixels of x        [B, C]        global_pool
        z = s W_r^T + b_r                [B, S]        linear
        h = silu(z)                      [B, S]        (``activation``: the tower's hidden_act)
        a = h W_e^T + b_e                [B, C]        linear
        g = sigmoid(a)                   [B, C]
        out = x * g[:, None, None, :]    [B, H, W, C]
    """
    act_forward, act_backward = activation_pair(activation)
    s, pool_cache = global_pool_forward(x)
    z, reduce_cache = linear_forward(s, w_reduce.reshape(w_reduce.shape[0], -1), b_reduce)
    h, act_cache = act_forward(z)
    a, expand_cache = linear_forward(h, w_expand.reshape(w_expand.shape[0], -1), b_expand)
    gate, sigmoid_cache = sigmoid_forward(a)
    out = x * gate[:, None, None, :]
    return out, (x, gate, pool_cache, reduce_cache, (act_backward, act_cache), expand_cache, sigmoid_cache)


def squeeze_excite_backward(dout: np.ndarray, cache):
    # [B, H, W, C] -> (dx [B, H, W, C], dw_reduce [S, C, 1, 1], db_reduce [S],
    #                  dw_expand [C, S, 1, 1], db_expand [C])
    """x reaches the output twice, directly and through the gate's mean:

        dg[b, c] = sum over pixels of dy * x        (the product's other factor)
        dx       = dy * g  +  (backward of the gate MLP and the mean, from dg)

    where the MLP's backward is sigmoid -> linear -> silu (the activation) -> linear -> mean, each
    layer's own.

    Returns (dx, dw_reduce, db_reduce, dw_expand, db_expand).
    """
    x, gate, pool_cache, reduce_cache, (act_backward, act_cache), expand_cache, sigmoid_cache = cache
    dx = dout * gate[:, None, None, :]
    dgate = np.einsum("byxc,byxc->bc", dout, x)  # [B, C]
    da = sigmoid_backward(dgate, sigmoid_cache)
    dh, dw_expand, db_expand = linear_backward(da, expand_cache)
    dz = act_backward(dh, act_cache)
    ds, dw_reduce, db_reduce = linear_backward(dz, reduce_cache)
    dx += global_pool_backward(ds, pool_cache)
    S, C = dw_reduce.shape
    return dx, dw_reduce.reshape(S, C, 1, 1), db_reduce, dw_expand.reshape(C, S, 1, 1), db_expand


# ----------------------------------------------------------------------------------------------
# L2 normalisation, the similarity logits and ALIGN's contrastive loss
# ----------------------------------------------------------------------------------------------


def l2_normalize_forward(x: np.ndarray):
    # [N, D] -> [N, D]
    """y = x / ||x|| along the last axis (``loss.l2_normalize``). Caches y and ||x|| = <x, y>."""
    y = loss.l2_normalize(x)
    return y, (y, np.sum(x * y, axis=-1, keepdims=True))


def l2_normalize_backward(dout: np.ndarray, cache) -> np.ndarray:
    # [N, D] -> dx [N, D]
    """dy/dx = (I - y y^T) / ||x||: only the part of dy orthogonal to y moves x, so

        dx = (dy - y <y, dy>) / ||x||
    """
    y, norm = cache
    return (dout - y * np.sum(y * dout, axis=-1, keepdims=True)) / norm


def align_logits_forward(text_embeds: np.ndarray, image_embeds: np.ndarray, temperature):
    # [N_t, D], [N_i, D], scalar -> [N_t, N_i]
    """logits_per_text = text_embeds image_embeds^T / temperature (as ``AlignModel.logits``; the
    embeddings are already L2-normalised, so the product is a cosine similarity)."""
    logits = (text_embeds @ image_embeds.T) / temperature
    return logits, (text_embeds, image_embeds, temperature, logits)


def align_logits_backward(dout: np.ndarray, cache):
    # [N_t, N_i] -> (dtext_embeds [N_t, D], dimage_embeds [N_i, D], dtemperature scalar)
    """With Z = t v^T / tau:

        dt = dZ v / tau      dv = dZ^T t / tau      dtau = -sum(dZ * t v^T) / tau^2 = -sum(dZ * Z) / tau

    Returns (dtext_embeds, dimage_embeds, dtemperature); dtemperature is a 0-d float32 array.
    """
    t, v, temperature, logits = cache
    dt = (dout @ v) / temperature
    dv = (dout.T @ t) / temperature
    dtemperature = -np.sum(dout * logits) / temperature
    return dt, dv, np.asarray(dtemperature, dtype=logits.dtype)


def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray, label_smoothing: float = 0.0):
    # [N, C], [N] int -> scalar
    """Mean label-smoothed cross-entropy (``loss.cross_entropy``, as torch's)."""
    return loss.cross_entropy(logits, targets, label_smoothing), (logits, targets, label_smoothing)


def cross_entropy_backward(dloss, cache) -> np.ndarray:
    # scalar -> dlogits [N, C]
    """loss = mean_n -sum_c q[n, c] log p[n, c], p = softmax(logits[n]), with the smoothed target
    q[n, c] = (1 - eps) [c == y_n] + eps / C (q sums to 1), so

        dlogits[n, c] = dloss * (p[n, c] - q[n, c]) / N
    """
    logits, targets, eps = cache
    N, C = logits.shape
    q = np.full((N, C), np.float32(eps / C), dtype=np.float32)
    q[np.arange(N), targets] += np.float32(1 - eps)
    p = np.exp(loss.log_softmax(logits.astype(np.float32)))
    return (p - q) * np.float32(dloss / N)


def align_loss_forward(logits_per_text: np.ndarray):
    # [N, N] -> scalar
    """transformers' ``align_loss`` (``loss.align_loss``): the label-smoothed (0.1) cross-entropy
    of the texts' rows and of the images' rows (the transpose), averaged."""
    return loss.align_loss(logits_per_text), logits_per_text


def align_loss_backward(dloss, cache) -> np.ndarray:
    # scalar -> dlogits_per_text [N, N]
    """Each direction's cross-entropy backward with half of dloss; the image direction saw the
    transpose, so its gradient is transposed back:

        dZ = dloss / (2N) * (softmax_rows(Z) - Q + softmax_cols(Z) - Q),   Q = 0.9 I + 0.1 / N
    """
    logits = cache
    targets = np.arange(len(logits))
    caption = cross_entropy_backward(dloss / 2, (logits, targets, loss.LABEL_SMOOTHING))
    image = cross_entropy_backward(dloss / 2, (logits.T, targets, loss.LABEL_SMOOTHING))
    return caption + image.T
