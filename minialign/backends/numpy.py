"""The fast CPU backend (``backend="numpy"``, the default): the reference's math, made fast in NumPy.

Every op here computes what ``reference.py`` computes (tests/test_ops.py checks each one against
it and against torch); only the way the work reaches the CPU changes. Ops whose plain version is
already as fast as NumPy goes (embedding, layer norm, attention, the pooling) are the reference's
own functions. What made the rest fast, each trick measured on align-base's shapes against the
reference op on the project's 2-core machine (``benchmarks/numpy_backend.py``, results in
``benchmarks/results/numpy_backend.json``):

| op | shape | reference ms | numpy ms | speed-up |
| --- | --- | ---: | ---: | ---: |
| ``depthwise_conv2d`` | [1, 144, 144, 64], 3x3, stride 1 (block 0) | 21.8 | 12.0 | 1.9x |
| ``depthwise_conv2d`` | [1, 144, 144, 32], 3x3, stride 1 (blocks 1-3) | 12.2 | 5.6 | 2.2x |
| ``depthwise_conv2d`` | [1, 144, 144, 192], 3x3, stride 2 (block 4) | 19.8 | 9.7 | 2.0x |
| ``depthwise_conv2d`` | [1, 72, 72, 288], 3x3, stride 1 (blocks 5-10) | 18.8 | 8.6 | 2.1x |
| ``depthwise_conv2d`` | [1, 36, 36, 480], 5x5, stride 1 (blocks 12-17) | 17.1 | 6.3 | 2.7x |
| ``bias_act`` | [1, 144, 144, 192] + [192], SiLU | 19.1 | 11.8 | 1.5x |
| ``gelu`` | [4096, 3072] | 1972.8 | 140.6 | 13.9x |
| ``linear`` | [64, 64, 768] x [3072, 768] + [3072] | 154.9 | 115.4 | 1.3x |
| ``pointwise_conv`` | [1, 72, 72, 288] x [48, 288], SE gate [1, 288] | 13.3 | 3.9 | 4.0x |
| ``conv2d`` | [1, 289, 289, 3] x [64, 3, 3, 3], stride 2 | 8.2 | 4.7 | 1.7x |

(x86_64, 2 cores, 2 threads, NumPy 2.4.6, OPENBLAS_THREAD_TIMEOUT=16; median of 15 interleaved repeats.)

The tricks:

1. **Depthwise taps as one einsum over a strided view** (``depthwise_conv2d``). The reference
   adds k*k products into an accumulator, reading and writing it 2*k*k times; ``einsum`` over an
   ``as_strided`` view of the taps multiplies and adds in one loop. Its inner loop runs over the
   view's last axis, so at stride 1 a run of T neighbouring pixels x C channels is made that axis
   (C alone is only 32-64 on the largest maps).
2. **Bands of rows on every core** (``parallel_bands``). NumPy's elementwise loops use one core;
   they release the GIL, so threads that each take a band of ~128K elements run on both cores
   at once, and every step of an epilogue (bias, SiLU, residual, the squeeze's sums) runs while
   its band is still in the CPU cache instead of streaming the whole activation through memory.
3. **Blockwise erf** (``erf``, ``gelu``): the ~30 passes of erf's polynomial over 128K-element
   blocks in place instead of over a whole [4096, 3072] activation.
4. **One large matrix product** (``linear``): [B*T, in] @ [in, out] is one BLAS call; [B, T, in]
   @ [in, out] is B small ones.
5. **Scale the weight, not the activation** (``pointwise_conv``): the squeeze-excitation gate
   multiplies W's columns (a [Cout, Cin] pass per image) instead of x's rows ([H*W, Cin]).
6. **im2col for the stem** (``conv2d``): one [B*Ho*Wo, Cin*k*k] matrix product instead of k*k.

One more gain lies outside the code: after each matrix product OpenBLAS's idle threads spin for
~0.1 s, keeping busy the core that the band threads need. ``OPENBLAS_THREAD_TIMEOUT=16`` (read
once, when NumPy loads OpenBLAS) shortens that to ~25 us; minialign never changes the process's
environment, so set it yourself before starting Python (the benchmarks record whether it was set).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from . import reference
from .contract import CONV_ACTIVATIONS, Padding, check_activation
# Where the plain version is already as fast as NumPy goes, the reference's function is the op.
from .reference import (add, add_layer_norm, embedding, from_numpy, global_pool, is_floating_point,  # noqa: F401
                        layer_norm, multi_head_attention, nchw_to_nhwc, nhwc_to_nchw, packed_attention,
                        prepare_linears, prepare_weight, scatter_rows, squeeze_excite_gate, tanh, to_numpy)

NAME = "numpy"
PACK_TEXT = False  # get_text_features' default: length buckets (see contract.Ops.PACK_TEXT)

# ----------------------------------------------------------------------------------------------
# elementwise functions
# ----------------------------------------------------------------------------------------------

# The coefficients of reference.erf, as float32 constants: the erfc fit (Numerical Recipes) and
# the Taylor series of erf near 0.
_ERFC_COEFFS = tuple(np.float32(c) for c in reference.ERFC_COEFFS)
_ERF_SERIES = tuple(np.float32(c) for c in reference.ERF_SERIES_COEFFS)
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
    """erf(x) as ``reference.erf`` computes it (the series below 0.5, 1 - erfc above), with
    Horner's rule in place, on blocks of 128K elements, on every core. Within a few float32 ulps
    of the true value: erfc(|x|) < 0.48 where it is used, so its 1.2e-7 relative error stays small.
    """
    return _blockwise(_erf_block, x)


def _gelu_block(x: np.ndarray) -> np.ndarray:
    return np.float32(0.5) * x * (1 + _erf_block(x * np.float32(1 / math.sqrt(2))))


def gelu(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """GELU, exact form: x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2))) (``reference.gelu``), blockwise."""
    return _blockwise(_gelu_block, x)


def silu(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """x * sigmoid(x) (``reference.silu``) as x / (1 + exp(-x)): one pass over x fewer."""
    with np.errstate(over="ignore"):  # exp(-x) = inf for x < -88: then x / inf = -0, the limit
        return x / (1 + np.exp(-x))


# The two activations ALIGN's checkpoints use are sped up; the rest are the reference's functions.
ACTIVATIONS = {**reference.ACTIVATIONS, "gelu": gelu, "gelu_python": gelu, "silu": silu, "swish": silu}


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
#   nothing). With OPENBLAS_THREAD_TIMEOUT=16 (2^16 cycles, ~25 us) the whole tower runs ~12%
#   faster (0.54 s instead of 0.62 s); a still smaller timeout makes every product wait for its
#   threads to wake up. OpenBLAS reads the variable once, when NumPy loads it; minialign leaves
#   the environment to the user (see the module docstring).
# Tried and dropped: each thread running its own band of a 1x1 conv's matrix product with
# OpenBLAS single-threaded (OPENBLAS_NUM_THREADS=1), so that the epilogue follows in cache: 10-25%
# slower than one multi-threaded product followed by a banded epilogue.


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
        # A helper that has not started is cancelled (the bands are all taken). Only started ones
        # are waited for: a cancelled one counts as done only once a pool thread has dequeued it,
        # which never happens if that thread is the one waiting here (a nested call would hang).
        started = [helper for helper in helpers if not helper.cancel()]
        wait(started)  # never return while a helper may still be writing
    for helper in started:
        helper.result()  # re-raises an exception from that thread


# ----------------------------------------------------------------------------------------------
# layers with weights
# ----------------------------------------------------------------------------------------------


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
           activation: str | None = None) -> np.ndarray:
    # [..., in], [out, in], [out] -> [..., out]
    """y = act(x W^T + b) (``reference.linear``).

    The leading axes are flattened first: NumPy runs a [B, T, in] @ [in, out] product as B
    separate small matrix products, a [B*T, in] @ [in, out] one as a single large BLAS call
    (measured 2.5x faster on BERT's shapes).
    """
    check_activation(activation)
    y = (x.reshape(-1, x.shape[-1]) @ weight.T).reshape(*x.shape[:-1], weight.shape[0])
    if bias is not None:
        y += bias
    return y if activation is None else ACTIVATIONS[activation](y)


def linear_add_layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, residual: np.ndarray,
                          norm_weight: np.ndarray, norm_bias: np.ndarray, eps: float) -> np.ndarray:
    # [..., in], [H, in], [H], [..., H], [H], [H] -> [..., H]
    """``reference.linear_add_layer_norm`` with this module's ``linear``; the residual is added into
    the product's own fresh array, so the sum costs no [..., H] allocation of its own."""
    y = linear(x, weight, bias)
    y += residual
    return layer_norm(y, norm_weight, norm_bias, eps)


def linears(x: np.ndarray, prepared) -> tuple[np.ndarray, ...]:  # [..., in] -> n x [..., out_i]
    """``reference.linears`` with this module's ``linear``: each one large BLAS call. (One product
    with the weights concatenated, as the Triton backend does, would keep a second copy of them in
    memory: this backend uses the checkpoint's arrays as they are.)"""
    return tuple(linear(x, weight, bias) for weight, bias in prepared)

# ----------------------------------------------------------------------------------------------
# convolutions, channels-last
# ----------------------------------------------------------------------------------------------


def pad_hw(x: np.ndarray, padding: Padding) -> np.ndarray:
    # [B, H, W, C] -> [B, H + top + bottom, W + left + right, C]
    """Zero-pad height and width (torch's ZeroPad2d, but with the (top, bottom, left, right) order)."""
    top, bottom, left, right = padding
    if not any(padding):
        return x
    B, H, W, C = x.shape
    # A zero-filled buffer with x copied into its interior: the same result as np.pad, which is
    # written for every mode and dimension and takes ~3x longer on these shapes.
    out = np.zeros((B, H + top + bottom, W + left + right, C), dtype=x.dtype)
    out[:, top:top + H, left:left + W] = x
    return out


def _windows(x: np.ndarray, kernel_size: int, stride: int) -> np.ndarray:
    # [B, Hp, Wp, C] (already padded) -> [B, Ho, Wo, C, k, k], a view
    """The k x k input window of every output pixel of a valid, strided convolution:

        windows[b, y, x, c, i, j] = x_padded[b, y*stride + i, x*stride + j, c]

    A strided view of the input (numpy's sliding_window_view), no copy: the k*k taps of a
    convolution are its last two axes.
    """
    windows = np.lib.stride_tricks.sliding_window_view(x, (kernel_size, kernel_size), axis=(1, 2))
    return windows[:, ::stride, ::stride]


def bias_act(y: np.ndarray, bias: np.ndarray | None = None, activation: str | None = None,
             residual: np.ndarray | None = None, *, out: np.ndarray | None = None) -> np.ndarray:
    # [..., C], [C], -, [..., C] -> [..., C]
    """act(y + bias) + residual: the epilogue of every convolution in the vision tower (its
    batchnorm folded into the weights leaves a per-channel bias; see fold_batch_norm).

    ``activation`` is None or a name of ACTIVATIONS (SiLU in place, the others through their
    function, band by band). Writes into ``out`` (which may be ``y`` itself, to work in
    place) or a new array. Computed in bands of rows of ~128K elements on all cores
    (``parallel_bands``): each band goes through every step while it is in the CPU cache, instead
    of each step streaming the whole activation through memory. exp, inside SiLU, is the
    expensive step (~2 ns per float32 on the benchmark machine, ten times a multiply), which is
    what makes the threads pay off.
    """
    check_activation(activation, CONV_ACTIVATIONS)
    rows_in = y.reshape(-1, y.shape[-1])  # [N, C]
    rows_out = (np.empty(rows_in.shape, dtype=np.float32) if out is None else out).reshape(rows_in.shape)
    rows_res = None if residual is None else residual.reshape(rows_in.shape)

    def band(rows: slice) -> None:
        _bias_act_rows(rows_in[rows], bias, activation, None if rows_res is None else rows_res[rows],
                       out=rows_out[rows], in_place=out is y)

    parallel_bands(band, rows_in.shape[0], rows_per_band=max(1, _EPILOGUE_BAND // rows_in.shape[1]))
    return rows_out.reshape(y.shape)


def _bias_act_rows(y: np.ndarray, bias, activation, residual, *, out: np.ndarray, in_place: bool) -> None:
    """bias_act on one band, on the calling thread."""
    if bias is not None:
        np.add(y, bias, out=out)
    elif not in_place:
        out[...] = y
    if activation in ("silu", "swish"):
        _silu_(out, scratch=np.empty_like(out))
    elif activation is not None:
        out[...] = ACTIVATIONS[activation](out)
    if residual is not None:
        out += residual


_EPILOGUE_BAND = 1 << 17  # elements per band of rows; see bias_act


def _silu_(z: np.ndarray, scratch: np.ndarray) -> None:
    # [...] in place, [...] scratch of the same shape
    """z <- silu(z) = z / (1 + exp(-z)), in place, for the fused ops."""
    np.negative(z, out=scratch)
    with np.errstate(over="ignore"):  # exp(-z) = inf for z < -88: then z / inf = -0, the limit
        np.exp(scratch, out=scratch)
    scratch += 1
    z /= scratch


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: Padding = (0, 0, 0, 0),
           *, bias: np.ndarray | None = None, activation: str | None = None) -> np.ndarray:
    # [B, H, W, Cin], [Cout, Cin, k, k], [Cout] -> [B, Ho, Wo, Cout]
    """A dense k x k convolution (used by the stem), as one matrix product, then ``bias_act``.

    out[b, y, x, o] = sum_{i, j, c} x_pad[b, y*s + i, x*s + j, c] * weight[o, c, i, j]  (+ bias[o])

    The windows are copied into a [B, Ho, Wo, Cin*k*k] patch matrix (im2col), in (c, i, j) order,
    which is the order of the weight's [Cin, k, k] axes, so the weight is used as it is.
    """
    check_activation(activation, CONV_ACTIVATIONS)
    cout, cin, k, _ = weight.shape
    windows = _windows(pad_hw(x, padding), k, stride)  # [B, Ho, Wo, Cin, k, k]
    patches = windows.reshape(*windows.shape[:3], cin * k * k)  # a copy: the view is not contiguous
    y = linear(patches, weight.reshape(cout, cin * k * k))
    if bias is None and activation is None:
        return y
    return bias_act(y, bias, activation, out=y)


def pointwise_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *,
                   activation: str | None = None, input_scale: np.ndarray | None = None,
                   residual: np.ndarray | None = None) -> np.ndarray:
    # [B, H, W, Cin], [Cout, Cin, 1, 1], [Cout], -, [B, Cin], [B, H, W, Cout] -> [B, H, W, Cout]
    """A 1x1 convolution, the same linear map at every pixel, with an optional fused epilogue:

    out[b, y, x, :] = act((x[b, y, x, :] * input_scale[b]) @ W^T + bias) + residual[b, y, x, :]

    ``input_scale`` is the squeeze-excitation gate of an MBConv block, one factor per (image,
    input channel). Scaling W's columns instead of x's rows gives the same sum,

        sum_c (x[p, c] * g[c]) * W[o, c]  =  sum_c x[p, c] * (W[o, c] * g[c])

    (equal up to float32 rounding), and W is far smaller than the [H*W, Cin] activation, so the
    gate costs a pass over the weight per image instead of a pass over the activation.
    """
    check_activation(activation, CONV_ACTIVATIONS)
    w = weight.reshape(weight.shape[0], -1)  # [Cout, Cin]
    if input_scale is None:
        y = linear(x, w)
    else:
        B, Cin = x.shape[0], x.shape[-1]
        y = np.empty((*x.shape[:-1], w.shape[0]), dtype=np.float32)
        for b in range(B):  # a [H*W, Cin] @ [Cin, Cout] product per image, with its own gate
            np.matmul(x[b].reshape(-1, Cin), (w * input_scale[b]).T, out=y[b].reshape(-1, w.shape[0]))
    if bias is None and activation is None and residual is None:
        return y
    return bias_act(y, bias, activation, residual, out=y)


_DEPTHWISE_BAND = 1 << 18  # output elements per band of rows; see depthwise_conv2d


def depthwise_conv2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: Padding = (0, 0, 0, 0),
                     *, bias: np.ndarray | None = None, activation: str | None = None,
                     return_means: bool = False):
    # [B, H, W, C], [C, 1, k, k], [C] -> [B, Ho, Wo, C]  (and [B, C] with return_means)
    """Depthwise k x k convolution: each channel is filtered by its own k x k kernel.

    out[b, y, x, c] = act(sum_{i, j} x_pad[b, y*s + i, x*s + j, c] * weight[c, 0, i, j] + bias[c])

    and, with ``return_means``, also mean_{y, x} out[b, y, x, c], the "squeeze" of the
    squeeze-excitation that follows in an MBConv block, so that it need not read ``out`` again.

    The sum over the k*k taps is one ``einsum`` over a strided view of the padded input
    (``_depthwise_windows``): for every output pixel it multiplies the k*k input pixels by their
    weights and adds them up, without the [k*k, ...] copy that im2col would make. No channel is
    mixed with another, so there is no matrix product to hand the work to -- this is the layer a
    GPU kernel fuses first.

    Measured on align-base's depthwise layers (2 cores, see benchmarks/vision_tower.py):
    - einsum's multiply-and-add loop reads each tap once; spelling the sum as k*k multiplies and
      adds into an accumulator reads and writes the accumulator 2*k*k times: einsum is ~2x faster.
    - einsum's inner loop runs over the view's last axis and costs a fixed overhead per call.
      With channels last that axis would be C, only 32-64 on the 144x144 layers; at stride 1 a
      run of T neighbouring pixels is contiguous too, so the view's last axis is T pixels x C
      channels (the weight repeated T times to match): the einsum is 2-4x faster on those layers
      and the same elsewhere. ~4K elements per run keep the repeated weight in cache.
    - The output is computed in bands of rows of ~256K elements on all cores (``parallel_bands``),
      so the bias, the SiLU and the band's sum run while the band is in the CPU cache.
    """
    check_activation(activation, CONV_ACTIVATIONS)
    k = weight.shape[-1]
    x_pad = pad_hw(x, padding)
    B, C = x.shape[0], x.shape[-1]
    Ho, Wo = (x_pad.shape[1] - k) // stride + 1, (x_pad.shape[2] - k) // stride + 1
    T = _pixels_per_run(Wo, C) if stride == 1 else 1
    windows = _depthwise_windows(x_pad, k, stride, T)  # [B, Ho, Wo/T, k, k, T*C]
    # w[i, j, t*C + c] = weight[c, 0, i, j]: the taps' weights in the windows' (pixel, channel)
    # order, contiguous, as einsum's inner loop needs to be fast (5x on these shapes).
    w = np.ascontiguousarray(np.tile(weight[:, 0].transpose(1, 2, 0), (1, 1, T)))  # [k, k, T*C]
    run_bias = None if bias is None else np.tile(bias, T)  # [T*C]
    out = np.empty((B, Ho, Wo // T, T * C), dtype=np.float32)
    rows_per_band = max(1, _DEPTHWISE_BAND // (B * Wo * C))
    row_sums = np.empty((B, Ho, C), dtype=np.float32)  # row_sums[b, y, c] = sum_x out[b, y, x, c]

    def band(rows: slice) -> None:  # the output rows y in `rows`
        acc = out[:, rows]  # [B, band, Wo/T, T*C], a view: writing it fills `out`
        np.einsum("byrijX,ijX->byrX", windows[:, rows], w, out=acc)
        _bias_act_rows(acc, run_bias, activation, None, out=acc, in_place=True)
        if return_means:
            row_sums[:, rows] = acc.reshape(B, -1, Wo, C).sum(axis=2)

    parallel_bands(band, Ho, rows_per_band)
    out = out.reshape(B, Ho, Wo, C)
    if not return_means:
        return out
    # Sums per row, not per band, so the result does not depend on the banding (or the number of
    # threads); the rows are added in float64, where a float32 running sum over 144x144 pixels
    # would lose digits.
    return out, (row_sums.sum(axis=1, dtype=np.float64) / (Ho * Wo)).astype(np.float32)


_RUN_ELEMENTS = 4096  # the longest run of (pixel, channel) elements einsum's inner loop gets


def _pixels_per_run(width: int, channels: int) -> int:
    """The largest T dividing ``width`` with T * channels <= _RUN_ELEMENTS (at least 1)."""
    return max(t for t in range(1, width + 1) if width % t == 0 and (t == 1 or t * channels <= _RUN_ELEMENTS))


def _depthwise_windows(x: np.ndarray, kernel_size: int, stride: int, run: int) -> np.ndarray:
    # [B, H, W, C] -> [B, Ho, Wo/run, k, k, run*C]
    """The depthwise conv's k*k taps as a strided view (no copy), ``run`` output pixels at a time:

        view[b, y, r, i, j, t*C + c] = x[b, y*s + i, (r*run + t)*s + j, c]

    A run of pixels and their channels is one axis, which needs the run's input pixels to be
    neighbours in memory: ``run`` > 1 only at stride 1.
    """
    if run > 1 and stride != 1:
        raise ValueError(f"a run of {run} pixels needs stride 1, got stride {stride}")
    B, H, W, C = x.shape
    sb, sy, sx, sc = x.strides
    Ho, Wo = (H - kernel_size) // stride + 1, (W - kernel_size) // stride + 1
    return np.lib.stride_tricks.as_strided(
        x, shape=(B, Ho, Wo // run, kernel_size, kernel_size, run * C),
        strides=(sb, stride * sy, run * stride * sx, sy, sx, sc), writeable=False)
