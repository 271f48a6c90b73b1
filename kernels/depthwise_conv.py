"""Depthwise k x k convolution, channels-last, fused with eval batchnorm and SiLU (one Triton kernel).

The math, per image b, output pixel (y, x) and channel c, with the input implicitly zero-padded by
``padding = (top, bottom, left, right)``:

    z[b, y, x, c] = sum_{i, j < k} x[b, y*s + i - top, x*s + j - left, c] * weight[c, 0, i, j]
    z            <- z * scale[c] + shift[c]          eval batchnorm, folded (see below)
    out          =  z * sigmoid(z) = z / (1 + exp(-z))                              SiLU
    sums[b, c]   =  sum_{y, x} out[b, y, x, c]       what squeeze-excitation averages

with ``scale = bn.weight / sqrt(running_var + eps)`` and ``shift = bn.bias - running_mean * scale``
(``minialign.backends.reference.batch_norm`` applies it the same way). This replaces the NumPy path
``silu(batch_norm(depthwise_conv2d(x, weight, stride, padding)))`` of an MBConv block plus the
``mean`` over space that squeeze-excitation starts with, so the activation is written once and
never read back just to be averaged (divide ``sums`` by ``Ho * Wo`` for the mean).

Output size: ``Ho = (H + top + bottom - k) // s + 1`` (same for W). k is 3 or 5, s is 1 or 2, as
in the vision tower: stride 1 uses "same" padding k//2 on every side; stride 2 uses
transformers' ``correct_pad`` (k//2 - 1 top/left, k//2 bottom/right) or, for the blocks listed
in ``config.depthwise_padding``, k//2 on every side (see ``vision_model.depthwise_padding``).

Layout. ``x`` is [B, H, W, C], contiguous: channels are the fastest axis. A torch NCHW tensor in
``channels_last`` memory format is the same memory; pass ``t.permute(0, 2, 3, 1)`` (a free view) and
read the result back as NCHW with ``y.permute(0, 3, 1, 2)``. The launcher does not guess between
[B, C, H, W] and [B, H, W, C] from a tensor's strides (ambiguous when sizes coincide): it takes the
logical NHWC shape only, and says so when handed an NCHW channels_last tensor.

Tiling. One program computes a tile of BLOCK_P output pixels (consecutive in raster order over
Ho*Wo, so a tile may span several short rows: no lanes are wasted on 10x10 maps) times BLOCK_C
channels of one image. Channels are the contiguous vector axis: every load of the tile reads, for
each pixel, BLOCK_C channels = one contiguous run (128 bytes of bfloat16 for BLOCK_C = 64). The
program loops over the k*k taps (unrolled at compile time); for tap (i, j) it loads the
[BLOCK_P, BLOCK_C] input pixels that tap sees and the tap's BLOCK_C weights (once per tap), and
accumulates in float32. Padding is implicit: loads outside the image are masked to 0, there is
never a padded copy. Neighbouring taps re-read mostly the same input, which the k*k loads pick up
from L1/L2 rather than HBM; HBM sees each input pixel about once. The batchnorm, SiLU and the
per-channel spatial sum are an epilogue on the float32 accumulator; the output is rounded to the
input dtype once, on store.

Sums. Many programs (the pixel tiles of one image) contribute to the same ``sums[b, c]``; each
adds its tile's column sums with ``tl.atomic_add`` into a zeroed float32 [B, C] buffer. Float32
addition is not associative and the atomics land in whatever order the programs finish, so the
sums are nondeterministic in their last bits (relative error ~ tiles * 2**-24); tests compare them
with a tolerance, never bit-for-bit. They are sums of the float32 activations before rounding to
the output dtype.

References: Triton tutorials (python/tutorials/05-layer-norm.py for file structure and the
epilogue style); Tan & Le, "EfficientNet" (2019) for the MBConv block; transformers'
``AlignVisionDepthwiseLayer`` and ``correct_pad`` for the padding convention.

Benchmark: ``benchmarks/depthwise_conv.py``. It is in the repository, not in the installed package,
and checks the kernel's output before it times it::

    python benchmarks/depthwise_conv.py --dry-run    # no GPU: checks only
    python benchmarks/depthwise_conv.py --out benchmarks/results/depthwise_conv_gpu.json
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._checks import KernelInputError, check_tensor

KERNEL_SIZES = (3, 5)
STRIDES = (1, 2)


@triton.jit
def _depthwise_conv_bn_silu_kernel(
    x_ptr,  # [B, H, W, C] input, contiguous (channel stride 1, pixel stride C)
    w_ptr,  # [K, K, C] float32 taps, contiguous: w[i, j, c] = weight[c, 0, i, j]
    scale_ptr,  # [C] float32 batchnorm scale
    shift_ptr,  # [C] float32 batchnorm shift
    y_ptr,  # [B, Ho, Wo, C] output, contiguous, x's dtype
    sums_ptr,  # [B, C] float32, zeroed by the launcher: sum over (Ho, Wo) of the output
    H, W, C,  # input height, width, channels
    Ho, Wo,  # output height, width
    pad_top, pad_left,  # zeros implicitly added above / left of the image
    K: tl.constexpr,  # kernel size (3 or 5): the tap loops are unrolled
    STRIDE: tl.constexpr,  # 1 or 2
    ACTIVATION: tl.constexpr,  # apply SiLU after the batchnorm
    WRITE_SUMS: tl.constexpr,  # accumulate sums_ptr
    BLOCK_P: tl.constexpr,  # output pixels per program (raster order over Ho * Wo)
    BLOCK_C: tl.constexpr,  # channels per program: the contiguous vector axis
):
    pid_p = tl.program_id(0)  # which tile of output pixels (fastest: neighbours share input rows in L2)
    pid_c = tl.program_id(1)  # which block of channels
    b = tl.program_id(2)  # which image

    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P] flat output pixel index
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C] channel index
    mask_p = offs_p < Ho * Wo
    mask_c = offs_c < C
    oy = offs_p // Wo
    ox = offs_p % Wo
    iy0 = oy * STRIDE - pad_top  # input row / column that tap (0, 0) reads; may be negative
    ix0 = ox * STRIDE - pad_left

    # Image offsets in int64: B * H * W * C can pass 2**31 at batch 64; one image cannot (checked).
    x_img = x_ptr + b.to(tl.int64) * H * W * C
    y_img = y_ptr + b.to(tl.int64) * Ho * Wo * C

    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for i in tl.static_range(K):
        iy = iy0 + i
        row_ok = mask_p & (iy >= 0) & (iy < H)
        for j in tl.static_range(K):
            ix = ix0 + j
            ok = row_ok & (ix >= 0) & (ix < W)  # False in the padding: implicit zeros
            x_tap = tl.load(x_img + (iy * W + ix)[:, None] * C + offs_c[None, :],
                            mask=ok[:, None] & mask_c[None, :], other=0.0)  # [BLOCK_P, BLOCK_C]
            w_tap = tl.load(w_ptr + (i * K + j) * C + offs_c, mask=mask_c, other=0.0)  # [BLOCK_C]
            acc += x_tap.to(tl.float32) * w_tap[None, :]

    # Epilogue on the float32 accumulator: batchnorm, SiLU, store, spatial sums.
    scale = tl.load(scale_ptr + offs_c, mask=mask_c, other=0.0)
    shift = tl.load(shift_ptr + offs_c, mask=mask_c, other=0.0)
    z = acc * scale[None, :] + shift[None, :]
    if ACTIVATION:
        z = z / (1.0 + tl.exp(-z))  # SiLU; exp overflows to inf for z << 0, giving -0.0: fine
    mask = mask_p[:, None] & mask_c[None, :]
    tl.store(y_img + offs_p[:, None] * C + offs_c[None, :], z.to(y_ptr.dtype.element_ty), mask=mask)
    if WRITE_SUMS:
        # Pixels past the end of the map hold silu(shift), not 0: zero them before summing.
        tile_sum = tl.sum(tl.where(mask, z, 0.0), axis=0)  # [BLOCK_C]
        tl.atomic_add(sums_ptr + b * C + offs_c, tile_sum, mask=mask_c)


def _block_sizes(num_pixels: int, channels: int) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C) for a map of ``num_pixels`` output pixels and ``channels`` channels.

    BLOCK_C = 64: 64 bfloat16 channels are one 128-byte cache line per pixel per load. When C is a
    multiple of 32 but not of 64 (align-base's 288, 1056, ...) 32 leaves no lanes idle; tiny C
    (tests) rounds up to a power of two. The tile holds ~4096 elements (32 float32 accumulators
    per thread at 4 warps). Masked lanes cost no memory traffic, only idle threads, so the widest
    tile is kept unless it pads the map with >10% more masked pixels than BLOCK_P/2 or BLOCK_P/4
    would (a 10x10 map: 7 tiles of 16 = 112 pixels, not 2 of 64 = 128). A guess, not yet tuned
    on a GPU.
    """
    if channels % 64 == 0:
        block_c = 64
    elif channels % 32 == 0:
        block_c = 32
    else:
        block_c = min(64, triton.next_power_of_2(channels))
    widest = 4096 // block_c
    def padded(bp):
        return triton.cdiv(num_pixels, bp) * bp

    candidates = (widest, widest // 2, widest // 4)
    fewest = min(padded(bp) for bp in candidates)
    block_p = next(bp for bp in candidates if padded(bp) <= 1.1 * fewest)
    return block_p, block_c


def depthwise_conv_bn_silu(x, weight, scale, shift, *, stride: int, padding, activation: bool = True,
                           return_sums: bool = True):
    # [B, H, W, C], [C, 1, k, k], [C], [C] -> [B, Ho, Wo, C], [B, C]
    """Depthwise k x k conv + eval batchnorm (as scale/shift) + SiLU, channels-last, one kernel.

    Args:
        x: [B, H, W, C] float32 or bfloat16 (float16 also works), contiguous (channels-last).
            For an NCHW tensor ``t`` in channels_last memory format pass ``t.permute(0, 2, 3, 1)``.
        weight: [C, 1, k, k] depthwise filters (torch's layout), k in {3, 5}, any float dtype; cast
            to float32 and laid out as [k, k, C] here (a few KB).
        scale, shift: [C] float32, the folded batchnorm: weight / sqrt(var + eps) and
            bias - mean * scale.
        stride: 1 or 2.
        padding: (top, bottom, left, right) implicit zero padding, each in [0, k - 1].
        activation: apply SiLU after the batchnorm (False: conv + batchnorm only).
        return_sums: also return the per-(image, channel) sums of the output over space.

    Returns:
        (y, sums): y [B, Ho, Wo, C] in x's dtype, Ho = (H + top + bottom - k) // stride + 1 (and
        likewise Wo); sums [B, C] float32 (sums of the float32 outputs before rounding; the
        summation order is nondeterministic, see the module docstring), or None when
        ``return_sums`` is False.

    Raises:
        KernelInputError: for any shape, dtype, device, layout, kernel size, stride or padding
            this kernel does not handle.
    """
    import torch

    if isinstance(x, torch.Tensor) and x.ndim == 4 and not x.is_contiguous() \
            and x.is_contiguous(memory_format=torch.channels_last):
        raise KernelInputError(
            f"x has shape {tuple(x.shape)} in channels_last memory format, i.e. NCHW; this kernel takes "
            "the logical channels-last shape [B, H, W, C]: pass x.permute(0, 2, 3, 1) (a free view)")
    check_tensor("x", x, ndim=4, dtypes=(torch.float32, torch.bfloat16, torch.float16), contiguous=True)
    B, H, W, C = x.shape
    check_tensor("weight", weight, ndim=4, device=x.device,
                 dtypes=(torch.float32, torch.bfloat16, torch.float16, torch.float64))
    k = weight.shape[-1]
    if k not in KERNEL_SIZES:
        raise KernelInputError(f"weight must be [C, 1, k, k] with k in {KERNEL_SIZES}, got {tuple(weight.shape)}")
    check_tensor("weight", weight, shape=(C, 1, k, k))
    check_tensor("scale", scale, shape=(C,), dtypes=(torch.float32,), device=x.device, contiguous=True)
    check_tensor("shift", shift, shape=(C,), dtypes=(torch.float32,), device=x.device, contiguous=True)
    if stride not in STRIDES:
        raise KernelInputError(f"stride must be one of {STRIDES}, got {stride!r}")
    if len(tuple(padding)) != 4 or any(not isinstance(p, int) or not 0 <= p < k for p in padding):
        raise KernelInputError(f"padding must be (top, bottom, left, right) ints in [0, {k - 1}], got {padding!r}")
    top, bottom, left, right = padding
    Ho = (H + top + bottom - k) // stride + 1
    Wo = (W + left + right - k) // stride + 1
    if Ho < 1 or Wo < 1:
        raise KernelInputError(f"a {H}x{W} input padded by {tuple(padding)} is smaller than the {k}x{k} kernel")
    if H * W * C >= 2**31 or Ho * Wo * C >= 2**31:
        raise KernelInputError(f"one image of {H}x{W}x{C} elements is too large for int32 pixel offsets")

    block_p, block_c = _block_sizes(Ho * Wo, C)
    grid = (triton.cdiv(Ho * Wo, block_p), triton.cdiv(C, block_c), B)
    if grid[1] > 65535 or grid[2] > 65535:  # CUDA's limit on the grid's y and z dimensions
        raise KernelInputError(f"batch {B} or {C} channels exceed the launch grid (65535 blocks per axis)")

    y = torch.empty((B, Ho, Wo, C), dtype=x.dtype, device=x.device)
    sums = torch.zeros((B, C), dtype=torch.float32, device=x.device) if return_sums else None
    if y.numel() == 0:
        return y, sums
    taps = weight[:, 0].permute(1, 2, 0).to(torch.float32).contiguous()  # [k, k, C]
    _depthwise_conv_bn_silu_kernel[grid](
        x, taps, scale, shift, y, sums if return_sums else y,  # y: an unused stand-in pointer
        H, W, C, Ho, Wo, top, left,
        K=k, STRIDE=stride, ACTIVATION=activation, WRITE_SUMS=return_sums,
        BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4,
    )
    return y, sums
