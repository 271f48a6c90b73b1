"""The NumPy layers: the reference every other backend is checked against.

Each function is one layer, written so it reads like the math in its docstring. The first line of
each function states the shapes (``# [B, T, in], [out, in], [out] -> [B, T, out]``). Weights keep
transformers' layouts (a linear weight is ``[out, in]``), so a checkpoint's arrays are used as
they are, without transposed copies.

Everything computes in float32, like the torch reference: NumPy's default would be float64, which
is slower and would make "same outputs to float32 precision" hold for the wrong reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

# ----------------------------------------------------------------------------------------------
# elementwise functions
# ----------------------------------------------------------------------------------------------

# Chebyshev fit of erfc(z) * exp(z^2) / t with t = 1 / (1 + z/2), z >= 0 (Numerical Recipes,
# 2nd ed., section 6.2, "erfcc"): fractional error below 1.2e-7 for every z >= 0.
_ERFC_COEFFS = tuple(np.float32(c) for c in (
    -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
    0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277,
))
# Taylor series of erf near 0: erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)).
# For |x| < 0.5 seven terms leave a truncation error under 1e-9 relative.
_ERF_SERIES = tuple(np.float32((-1) ** n / (math.factorial(n) * (2 * n + 1))) for n in range(7))
_TWO_OVER_SQRT_PI = np.float32(2 / math.sqrt(math.pi))
_ERF_CHUNK = 1 << 17  # elements per block; see erf()


def _erf_block(x: np.ndarray) -> np.ndarray:  # [n] float32 -> [n] float32
    """erf on one block; the math of erf() below, with in-place updates to save allocations."""
    z = np.abs(x)
    t = np.reciprocal(1 + np.float32(0.5) * z)
    # |x| >= 0.5: erf(x) = sign(x) * (1 - erfc(|x|)),  erfc(z) = t * exp(-z^2 + P(t)).
    p = np.full_like(z, _ERFC_COEFFS[-1])
    for c in reversed(_ERFC_COEFFS[:-1]):  # Horner's rule
        p *= t
        p += c
    p -= z * z
    np.exp(p, out=p)
    p *= t
    out = np.copysign(1 - p, x)
    # |x| < 0.5: the series, where 1 - erfc would lose relative accuracy (erf(x) ~ 1.13 x).
    small = z < 0.5
    xs = x[small]
    x2 = xs * xs
    s = np.full_like(xs, _ERF_SERIES[-1])
    for c in reversed(_ERF_SERIES[:-1]):
        s *= x2
        s += c
    out[small] = _TWO_OVER_SQRT_PI * xs * s
    return out


def _blockwise(block_fn, x: np.ndarray) -> np.ndarray:  # [...] -> [...] float32
    """Apply an elementwise ``block_fn`` to ``x`` in blocks of 128K elements.

    A polynomial costs ~30 elementwise passes; on a whole [4096, 3072] BERT activation each pass
    streams 50 MB through memory, on a block it stays in the CPU cache (measured about 4x faster).
    The blocks are the bands of ``parallel_bands``, so they also run on all cores.
    """
    x = np.asarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.float32)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)

    def block(elements: slice) -> None:
        flat_out[elements] = block_fn(flat_x[elements])

    parallel_bands(block, flat_x.size, rows_per_band=_ERF_CHUNK)
    return out


def erf(x: np.ndarray) -> np.ndarray:  # [...] -> [...] float32
    """The error function erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt, to float32 accuracy.

    NumPy has no erf (SciPy does, but minialign does not depend on it). Two pieces:
    - |x| < 0.5: the Taylor series, where 1 - erfc(x) would lose relative accuracy;
    - |x| >= 0.5: erf(x) = sign(x) * (1 - erfc(|x|)) with Numerical Recipes' Chebyshev fit of
      erfc (relative error < 1.2e-7); erfc(|x|) < 0.48 there, so erf keeps that accuracy.
    In float32 arithmetic the result is within a few float32 ulps of the true value
    (tests/test_layers.py checks it against math.erf and torch.erf).
    """
    return _blockwise(_erf_block, x)


def _gelu_block(x: np.ndarray) -> np.ndarray:
    return np.float32(0.5) * x * (1 + _erf_block(x * np.float32(1 / math.sqrt(2))))


def gelu(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """GELU, exact form: x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2))). BERT's "gelu"."""
    return _blockwise(_gelu_block, x)


def gelu_new(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """GELU, tanh approximation (GPT-2's "gelu_new"):
    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))."""
    c = np.float32(0.7978845608028654)  # sqrt(2 / pi)
    return 0.5 * x * (1.0 + np.tanh(c * (x + np.float32(0.044715) * x * x * x)))


def relu(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """max(x, 0)."""
    return np.maximum(x, 0)


def tanh(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """Hyperbolic tangent (the BERT pooler's activation)."""
    return np.tanh(x)


def sigmoid(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """1 / (1 + exp(-x)). For x < -88, exp(-x) overflows float32 to inf and the result is the
    correct limit 0, so the overflow warning is silenced rather than avoided."""
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def silu(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """SiLU (a.k.a. swish): x * sigmoid(x), computed as x / (1 + exp(-x)) (one pass fewer)."""
    with np.errstate(over="ignore"):
        return x / (1 + np.exp(-x))


ACTIVATIONS = {"gelu": gelu, "gelu_new": gelu_new, "relu": relu, "silu": silu, "swish": silu}

# ----------------------------------------------------------------------------------------------
# threads for elementwise work
# ----------------------------------------------------------------------------------------------
# NumPy's matrix products use every core (BLAS), its elementwise loops only one. Those loops
# release the GIL while they run, so Python threads that take different bands of rows of an array
# run on different cores at once -- when three things are right (measured on the benchmark
# machine, 2 cores in a VM):
# - Long calls. Between two NumPy calls a thread needs the GIL back; if the other thread holds
#   it, it sleeps, wakes ~0.1 ms later, often finds the GIL taken again and can wait out the 5 ms
#   switch interval. Each call must outlast the wake-up: bands of >= ~128K elements.
# - Few wake-ups. The threads are started once per op and pull bands from a shared counter; with
#   one pool task per band (a wake-up each), two threads were slower than one.
# - An idle core. After each matrix product OpenBLAS's threads spin for ~0.1 s (its default
#   OPENBLAS_THREAD_TIMEOUT, 2^28 cycles) on the core the helper thread needs, so in the vision
#   tower, where a matrix product comes every few ms, two threads gain nothing over one (and lose
#   nothing). With OPENBLAS_THREAD_TIMEOUT=16 (2^16 cycles, ~25 us; set before NumPy is imported)
#   the fused batchnorm + SiLU runs 1.25x and the fused depthwise stage 1.2x faster on 2 threads,
#   the whole tower ~10% faster. (A still smaller timeout makes every product wait for its
#   threads to wake up.)


def num_threads() -> int:
    """Threads for NumPy's elementwise work: $MINIALIGN_NUM_THREADS if set, else every core.

    The vision benchmark gives torch the same number, so the comparison is like for like.
    """
    return max(1, int(os.environ.get("MINIALIGN_NUM_THREADS") or os.cpu_count() or 1))


_pools: dict[int, ThreadPoolExecutor] = {}  # helper-thread count -> pool, made on first use


def parallel_bands(fn: Callable[[slice], None], num_rows: int, rows_per_band: int) -> None:
    """Call ``fn(rows)`` for the consecutive slices ``rows`` of ``range(num_rows)`` that are
    ``rows_per_band`` long (the last may be shorter), on up to ``num_threads()`` threads.

    The calling thread works too; helper threads join in when they wake up, and every thread
    takes the next band until none is left. ``fn`` must only write its own rows. Returns when
    every band is done; an exception in ``fn`` is raised here.
    """
    starts = iter(range(0, num_rows, rows_per_band))  # shared: next() on it is atomic under the GIL

    def work() -> None:
        for start in starts:
            fn(slice(start, min(num_rows, start + rows_per_band)))

    helpers_wanted = min(num_threads(), -(-num_rows // rows_per_band)) - 1  # no more threads than bands
    if helpers_wanted < 1:
        work()
        return
    if helpers_wanted not in _pools:
        _pools[helpers_wanted] = ThreadPoolExecutor(helpers_wanted, thread_name_prefix="minialign")
    helpers = [_pools[helpers_wanted].submit(work) for _ in range(helpers_wanted)]
    try:
        work()
    finally:
        for helper in helpers:
            helper.cancel()  # not started yet: the bands are all taken, no need to wait for it
        wait(helpers)  # never return while a helper may still be writing
    for helper in helpers:
        if not helper.cancelled():
            helper.result()  # re-raises an exception from that thread


# ----------------------------------------------------------------------------------------------
# layers with weights
# ----------------------------------------------------------------------------------------------


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    # [..., in], [out, in], [out] -> [..., out]
    """y = x W^T + b, with W stored as [out, in] like torch's nn.Linear.

    The leading axes are flattened first: NumPy runs a [B, T, in] @ [in, out] product as B
    separate small matrix products, a [B*T, in] @ [in, out] one as a single large BLAS call
    (measured 2.5x faster on BERT's shapes).
    """
    y = (x.reshape(-1, x.shape[-1]) @ weight.T).reshape(*x.shape[:-1], weight.shape[0])
    if bias is not None:
        y += bias
    return y


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    # [..., H], [H], [H] -> [..., H]
    """LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * weight + bias.

    var is the biased (population) variance, as in torch. Computed in two passes (mean first,
    then the mean of squared deviations), which stays accurate when |mean| >> std.
    """
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=-1, keepdims=True)
    return centered * (1.0 / np.sqrt(var + np.float32(eps))) * weight + bias


def embedding(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    # [...] int, [V, H] -> [..., H]
    """Row lookup: out[..., :] = table[ids[...], :]."""
    return table[ids]


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    # [...] -> [...]
    """exp(x - max) / sum(exp(x - max)): subtracting the max changes nothing mathematically and
    keeps exp from overflowing."""
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def attention_bias(attention_mask: np.ndarray) -> np.ndarray:
    # [B, T] of {0, 1} -> [B, 1, 1, T] float32
    """Turn a key padding mask (1 = real token, 0 = padding) into an additive bias.

    Padded keys get the most negative float32, as transformers does: after softmax their weight
    is exactly 0. (A row whose keys are *all* padding then gets a uniform softmax -- harmless,
    since such a sequence has no token whose output anyone reads.)
    """
    bias = np.where(attention_mask[:, None, None, :] != 0, 0.0, np.finfo(np.float32).min)
    return bias.astype(np.float32)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    # [B, h, T, d], [B, h, S, d], [B, h, S, d], [B, 1, 1, S] -> ([B, h, T, d], [B, h, T, S])
    """Scaled dot-product attention: softmax(q k^T / sqrt(d) + bias) v.

    Returns the output and the attention probabilities (the docs plot them; the parity report
    compares them).
    """
    d = q.shape[-1]
    scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(d ** -0.5)  # [B, h, T, S]
    if bias is not None:
        scores += bias
    probs = softmax(scores, axis=-1)
    return probs @ v, probs


# ----------------------------------------------------------------------------------------------
# convolutions, channels-last
# ----------------------------------------------------------------------------------------------
# Images flow through the vision tower as [B, H, W, C] (channels-last, NHWC): a 1x1 convolution
# is then a plain [B*H*W, C_in] @ [C_in, C_out] matrix product on contiguous rows, and every
# depthwise tap below multiplies a [B, Ho, Wo, C] slab by a length-C vector that broadcasts over
# the last (contiguous) axis. Weights keep torch's [C_out, C_in, kh, kw] layout.

Padding = tuple[int, int, int, int]  # (top, bottom, left, right), zeros added around H and W


def pad_hw(x: np.ndarray, padding: Padding) -> np.ndarray:
    # [B, H, W, C] -> [B, H + top + bottom, W + left + right, C]
    """Zero-pad height and width (torch's ZeroPad2d, but with the (top, bottom, left, right) order)."""
    top, bottom, left, right = padding
    if not any(padding):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def same_padding(kernel_size: int) -> Padding:
    """Padding that keeps H and W at stride 1 for an odd kernel: k // 2 on every side."""
    p = kernel_size // 2
    return (p, p, p, p)


def _output_size(size: int, kernel_size: int, stride: int) -> int:
    """Output length of a valid (already padded) strided convolution."""
    return (size - kernel_size) // stride + 1


def _taps(x: np.ndarray, kernel_size: int, stride: int, rows: slice | None = None):
    """Yield ((i, j), view) for each of the k*k kernel taps of a valid, strided convolution.

    view[b, y, x, c] = x_padded[b, y*stride + i, x*stride + j, c]: the input pixel that tap (i, j)
    sees for output pixel (y, x). ``rows`` restricts y to a range of output rows. Views are
    strided slices, not copies.
    """
    Ho = _output_size(x.shape[1], kernel_size, stride)
    Wo = _output_size(x.shape[2], kernel_size, stride)
    y0, y1 = (0, Ho) if rows is None else (rows.start, rows.stop)
    for i in range(kernel_size):
        for j in range(kernel_size):
            yield (i, j), x[:, y0 * stride + i:(y1 - 1) * stride + i + 1:stride, j:j + stride * (Wo - 1) + 1:stride, :]


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: Padding = (0, 0, 0, 0)) -> np.ndarray:
    # [B, H, W, Cin], [Cout, Cin, k, k] -> [B, Ho, Wo, Cout]
    """A dense k x k convolution (used by the stem), as one matrix product.

    out[b, y, x, o] = sum_{i, j, c} x_pad[b, y*s + i, x*s + j, c] * weight[o, c, i, j]

    The k*k strided views are stacked into a [B, Ho, Wo, k*k*Cin] patch matrix (im2col), and the
    weight is laid out to match, [k*k*Cin, Cout] in (i, j, c) order.
    """
    cout, cin, k, _ = weight.shape
    x = pad_hw(x, padding)
    patches = np.concatenate([view for _, view in _taps(x, k, stride)], axis=-1)  # [B, Ho, Wo, k*k*Cin]
    w = weight.transpose(2, 3, 1, 0).reshape(k * k * cin, cout)  # (i, j, c) x o
    return patches @ w


def pointwise_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    # [B, H, W, Cin], [Cout, Cin, 1, 1], [Cout] -> [B, H, W, Cout]
    """A 1x1 convolution: the same linear map applied at every pixel."""
    return linear(x, weight[:, :, 0, 0], bias)


def _silu_(z: np.ndarray, scratch: np.ndarray) -> None:
    # [...] in place, [...] scratch of the same shape
    """z <- silu(z) = z / (1 + exp(-z)), in place, for the fused ops below."""
    np.negative(z, out=scratch)
    with np.errstate(over="ignore"):  # exp(-z) = inf for z < -88: then z / inf = -0, the limit
        np.exp(scratch, out=scratch)
    scratch += 1
    z /= scratch


_DEPTHWISE_BAND = 1 << 18  # output elements per band of rows; see depthwise_conv2d


def depthwise_conv2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: Padding = (0, 0, 0, 0),
                     *, bias: np.ndarray | None = None, silu: bool = False) -> np.ndarray:
    # [B, H, W, C], [C, 1, k, k], [C] -> [B, Ho, Wo, C]
    """Depthwise k x k convolution: each channel is filtered by its own k x k kernel.

    out[b, y, x, c] = sum_{i, j} x_pad[b, y*s + i, x*s + j, c] * weight[c, 0, i, j]  (+ bias[c])

    then ``silu(out)`` if ``silu`` (see depthwise_conv2d_bn_silu, which uses both options).

    Written as the sum over the k*k taps: each tap is a strided view of the padded input times a
    per-channel weight vector, accumulated into the output. No channel mixing, so there is no
    matrix product to hand the work to -- this is the layer a GPU kernel fuses first.

    Two things make it fast enough (measured on align-base's depthwise layers, one thread):
    - Each tap's C weights are repeated along the output row, ``w[i, j]`` is [Wo, C], so a tap
      multiplies two contiguous [Wo, C] rows: NumPy runs one long loop per row instead of a short
      one per pixel over ``weight[:, 0, i, j]``, a strided vector. About 2.5x.
    - The output is computed in bands of rows of ~256K elements (``parallel_bands``), so that
      the k*k passes over a band (and the bias and SiLU) find it in the CPU cache: about 1.25x
      over whole-image passes; smaller bands lose more to NumPy's per-call overhead than they
      gain in cache.
    """
    k = weight.shape[-1]
    x = pad_hw(x, padding)
    B, _, _, C = x.shape
    Ho, Wo = _output_size(x.shape[1], k, stride), _output_size(x.shape[2], k, stride)
    # w[i, j, x, c] = weight[c, 0, i, j] for every output column x
    w = np.ascontiguousarray(np.broadcast_to(weight[:, 0].transpose(1, 2, 0)[:, :, None, :], (k, k, Wo, C)))
    out = np.empty((B, Ho, Wo, C), dtype=np.float32)

    def band(rows: slice) -> None:  # the output rows y in `rows`
        acc = out[:, rows]  # [B, band, Wo, C], a view: accumulating into it fills `out`
        tap = np.empty_like(acc)
        for (i, j), view in _taps(x, k, stride, rows):
            if i == j == 0:
                np.multiply(view, w[i, j], out=acc)  # the first tap starts the sum (no zero-fill)
            else:
                np.multiply(view, w[i, j], out=tap)  # [B, band, Wo, C] * [Wo, C]
                acc += tap
        if bias is not None:
            acc += bias
        if silu:
            _silu_(acc, scratch=tap)

    parallel_bands(band, Ho, rows_per_band=max(1, _DEPTHWISE_BAND // (B * Wo * C)))
    return out


def depthwise_conv2d_bn_silu(x: np.ndarray, weight: np.ndarray, stride: int, padding: Padding,
                             bn_weight, bn_bias, running_mean, running_var, eps: float) -> np.ndarray:
    # [B, H, W, C], [C, 1, k, k], [C] x 4 -> [B, Ho, Wo, C]
    """silu(batch_norm(depthwise_conv2d(x, weight, stride, padding), bn_weight, bn_bias,
    running_mean, running_var, eps)): the depthwise stage of an MBConv block as one op.

    Batchnorm is x * scale + shift per channel (batch_norm_scale_shift), and a per-channel scale
    of a depthwise conv's output is a conv with scaled weights:

        sum_{i, j} x_pad[...] * weight[c, 0, i, j] * scale[c] + shift[c]

    so the scale goes into the weights (equal up to float32 rounding), and the shift and the SiLU
    are applied to each band of output rows right after its taps, while it is in the CPU cache.
    """
    scale, shift = batch_norm_scale_shift(bn_weight, bn_bias, running_mean, running_var, eps)
    return depthwise_conv2d(x, weight * scale[:, None, None, None], stride, padding, bias=shift, silu=True)


def batch_norm_scale_shift(weight, bias, running_mean, running_var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    # [C] x 4 -> [C], [C]
    """Eval-mode batchnorm as a per-channel affine map x * scale + shift:
    scale = weight / sqrt(running_var + eps), shift = bias - running_mean * scale."""
    scale = weight / np.sqrt(running_var + np.float32(eps))
    return scale, bias - running_mean * scale


def batch_norm(x: np.ndarray, weight, bias, running_mean, running_var, eps: float) -> np.ndarray:
    # [..., C], [C] x 4 -> [..., C]
    """Eval-mode batchnorm over the channel (last) axis:
    (x - running_mean) / sqrt(running_var + eps) * weight + bias, applied as x * scale + shift."""
    scale, shift = batch_norm_scale_shift(weight, bias, running_mean, running_var, eps)
    return x * scale + shift


_BN_SILU_BAND = 1 << 17  # elements per band of rows; see batch_norm_silu


def batch_norm_silu(x: np.ndarray, weight, bias, running_mean, running_var, eps: float) -> np.ndarray:
    # [..., C], [C] x 4 -> [..., C]
    """silu(batch_norm(x, weight, bias, running_mean, running_var, eps)), fused: in an MBConv
    block the expansion's batchnorm is followed by SiLU (so is the stem's).

    z = x * scale + shift;  out = z / (1 + exp(-z))

    The same float32 operations as the two functions (so the same bits), computed in bands of
    rows of ~128K elements (``parallel_bands``): a band goes through all the elementwise steps
    while it is in the CPU cache, instead of each step streaming the whole activation through
    memory, and the bands run on all cores. exp is the expensive step (~2.3 ns per float32 here,
    more than 10x a multiply), which is what makes the threads pay off.
    """
    scale, shift = batch_norm_scale_shift(weight, bias, running_mean, running_var, eps)
    x_rows = x.reshape(-1, x.shape[-1])  # [N, C]
    out = np.empty(x_rows.shape, dtype=np.float32)

    def band(rows: slice) -> None:
        z = out[rows]
        np.multiply(x_rows[rows], scale, out=z)
        z += shift  # z = batch_norm(x)
        _silu_(z, scratch=np.empty_like(z))

    parallel_bands(band, x_rows.shape[0], rows_per_band=max(1, _BN_SILU_BAND // x_rows.shape[1]))
    return out.reshape(x.shape)


def squeeze_excite(x: np.ndarray, w_reduce, b_reduce, w_expand, b_expand) -> np.ndarray:
    # [B, H, W, C], [S, C, 1, 1], [S], [C, S, 1, 1], [C] -> [B, H, W, C]
    """Squeeze-and-excitation (Hu et al. 2018): reweight channels by a gate computed from the
    whole image.

    s = mean_{y, x} x[b, y, x, :]                       squeeze     [B, C]
    g = sigmoid(W_e silu(W_r s + b_r) + b_e)            excite      [B, C], in (0, 1)
    out[b, y, x, c] = x[b, y, x, c] * g[b, c]
    """
    pooled = x.mean(axis=(1, 2))  # [B, C]
    gate = sigmoid(linear(silu(linear(pooled, w_reduce[:, :, 0, 0], b_reduce)), w_expand[:, :, 0, 0], b_expand))
    return x * gate[:, None, None, :]


def global_pool(x: np.ndarray, kind: str) -> np.ndarray:
    # [B, H, W, C] -> [B, C]
    """Mean or max over all pixels."""
    return x.mean(axis=(1, 2)) if kind == "mean" else x.max(axis=(1, 2))
