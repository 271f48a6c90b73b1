"""Depthwise k x k convolution, channels-last, fused with eval batchnorm and SiLU (one Triton kernel).

The math, per image b, output pixel (y, x) and channel c, with the input implicitly zero-padded by
``padding = (top, bottom, left, right)``:

    z[b, y, x, c] = sum_{i, j < k} x[b, y*s + i - top, x*s + j - left, c] * weight[c, 0, i, j]
    z            <- z * scale[c] + shift[c]          eval batchnorm, folded (see below)
    out          =  z * sigmoid(z) = z / (1 + exp(-z))                              SiLU
    sums[b, p, c] = sum_{(y, x) in block p} out[b, y, x, c]     what squeeze-excitation averages

with ``scale = bn.weight / sqrt(running_var + eps)`` and ``shift = bn.bias - running_mean * scale``
(``minialign.backends.reference.batch_norm`` applies it the same way). This replaces the NumPy path
``silu(batch_norm(depthwise_conv2d(x, weight, stride, padding)))`` of an MBConv block plus the
``mean`` over space that squeeze-excitation starts with, so the activation is written once and
never read back just to be averaged: ``sums.sum(1) / (Ho * Wo)`` is the mean, and ``se_gate`` does
that addition itself as it loads the parts (see "Sums" below).

Output size: ``Ho = (H + top + bottom - k) // s + 1`` (same for W). k is 3 or 5, s is 1 or 2, as
in the vision tower: stride 1 uses "same" padding k//2 on every side; stride 2 uses
transformers' ``correct_pad`` (k//2 - 1 top/left, k//2 bottom/right) or, for the blocks listed
in ``config.depthwise_padding``, k//2 on every side (see ``vision_model.depthwise_padding``).

Layout. ``x`` is [B, H, W, C], contiguous: channels are the fastest axis. A torch NCHW tensor in
``channels_last`` memory format is the same memory; pass ``t.permute(0, 2, 3, 1)`` (a free view) and
read the result back as NCHW with ``y.permute(0, 3, 1, 2)``. The launcher does not guess between
[B, C, H, W] and [B, H, W, C] from a tensor's strides (ambiguous when sizes coincide): it takes the
logical NHWC shape only, and says so when handed an NCHW channels_last tensor.

Tiling. The output map is cut into patches of ROWS x RUN pixels (ROWS output rows by RUN consecutive
columns), and one thread computes a whole patch for 4 channels. A program holds BLOCK_R patches,
consecutive in raster order over the map's patches (so a program may span several short rows of
patches), times BLOCK_C channels of one image. Channels are the contiguous vector axis: a thread's
load reads 4 contiguous channels of one pixel (16 bytes of float32, 8 of bfloat16), a program's
load BLOCK_C channels of one pixel in each of its BLOCK_R patches.

Register reuse. A patch's windows cover (ROWS - 1) * s + k input rows and, in each, a segment of
SEG = (RUN - 1) * s + k pixels. The program walks those rows once, unrolled at compile time: per
input row t it forms the row's address and mask once, then loads each of the SEG pixels once,
converts it to float32 once, and adds it, times the right tap, into every output of the patch
whose window holds it: output (y, r) of the patch takes pixel q of row t as its tap
(t - y*s, q - r*s). The converted pixel stays in registers for the up to k taps of its filter row
(and, with ROWS = 2, for both output rows), so a 1 x 9 patch of a 3x3 stride-1 conv loads and
converts 3 x 11 pixels for its 9 outputs, 3.7 per output, where one load per tap would be 9. The
taps of the filter rows in use are loaded once per program and held in registers too. What the
accumulators cost in registers bounds the patch: ROWS * RUN * 4 float32 per thread, 36 or 72
(``_block_sizes``).

Padding is implicit: loads outside the image are masked to 0, there is never a padded copy. The
paddings and C are compiled in (one kernel per channel count and padding): a neighbour pixel's
address is then the row's address plus an immediate offset, and when the patches tile the map
exactly (``FULL``: RUN divides Wo, ROWS divides Ho and BLOCK_R the number of patches, as on every
align-base map) only the first ``top`` and last ``bottom`` input rows of a patch and the first
``left`` and last ``right`` pixels of a segment can fall outside the image; every other load, and
every store, has no mask.

bfloat16 is the top half of a float32: two neighbouring channels are loaded as one 32-bit word
(``PAIRS``: C even, x 4-byte aligned), the odd channel is that word with its low half cleared and
the even one the word shifted left by 16, one instruction per channel (the compiler's own
conversion spends two on the odd one).

The batchnorm, SiLU and the per-channel spatial sum are an epilogue on the float32 accumulators;
each output is rounded to the input dtype once, on store. SiLU is z * sigmoid(z) with
sigmoid(z) = 1 / (1 + 2^(-z log2 e)), the reciprocal taken as rsqrt(.)^2: 6 instructions, where
``z / (1 + tl.exp(-z))`` compiles to 12.

Sums. Many programs (the P blocks of patches of one image, ``P = grid[0]``) cover the pixels of
one ``(b, c)``. Each writes its tile's column sums into a part of its own, ``sums[b, p, c]`` with
p its ``program_id(0)``, of a float32 [B, P, C] buffer: no atomics, so the buffer is a
``torch.empty`` that nothing has to zero first (zeroing it was a launch of its own, per block),
and the sums are deterministic: the same bits on every run. The consumer adds the P parts:
``se_gate`` as it loads them, a standalone caller with ``sums.sum(1)``. P on align-base's maps at
any batch: 288 (144x144, C = 64), 144 (144x144, C = 32), 72 (72x72 after stride 2), 36 (72x72),
9 on every smaller map; the parts are 4P bytes per (image, channel) beside the 4 Ho Wo of the
bfloat16 input and output, 2.8% of them at 144x144 and 11% at 9x9 (stride 1). They are sums of
the float32 activations before rounding to the output dtype.

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
def _and(a, b):
    """a & b, where None stands for "all True" (no mask)."""
    if a is None:
        return b
    elif b is None:
        return a
    else:
        return a & b


@triton.jit
def _load_as_float32(ptrs, mask, PAIRS: tl.constexpr):
    """tl.load(ptrs, mask=mask, other=0) as float32; ``mask`` None loads without one. With PAIRS,
    ``ptrs`` [R, CW] points at 32-bit words each holding two bfloat16 channels, and the result is
    [R, 2 * CW] in channel order."""
    if mask is None:
        loaded = tl.load(ptrs)
    else:
        loaded = tl.load(ptrs, mask=mask, other=0)
    if PAIRS:
        even = (loaded << 16).to(tl.float32, bitcast=True)  # channel 2m: the low half, moved up
        odd = (loaded & 0xFFFF0000).to(tl.float32, bitcast=True)  # channel 2m + 1: the high half, as is
        return tl.join(even, odd).reshape(loaded.shape[0], 2 * loaded.shape[1])
    else:
        return loaded.to(tl.float32)


@triton.jit
def _depthwise_conv_bn_silu_kernel(
    x_ptr,  # [B, H, W, C] input, contiguous (channel stride 1, pixel stride C)
    w_ptr,  # [K, K, C] float32 taps, contiguous: w[i, j, c] = weight[c, 0, i, j]
    scale_ptr,  # [C] float32 batchnorm scale
    shift_ptr,  # [C] float32 batchnorm shift
    y_ptr,  # [B, Ho, Wo, C] output, contiguous, x's dtype
    sums_ptr,  # [B, P, C] float32, P = the grid's axis 0: part p is this program's sum over its patches
    H, W,  # input height, width
    Ho, Wo,  # output height, width
    C: tl.constexpr,  # channels, compiled in: a neighbour pixel's offset is an immediate
    K: tl.constexpr,  # kernel size (3 or 5)
    STRIDE: tl.constexpr,  # 1 or 2
    PAD_TOP: tl.constexpr, PAD_BOTTOM: tl.constexpr,  # zeros implicitly added above / below the image
    PAD_LEFT: tl.constexpr, PAD_RIGHT: tl.constexpr,  # ... left / right of it
    ACTIVATION: tl.constexpr,  # apply SiLU after the batchnorm
    WRITE_SUMS: tl.constexpr,  # write this program's part of sums_ptr
    ROWS: tl.constexpr,  # output rows per patch
    RUN: tl.constexpr,  # output columns per patch; one thread computes the ROWS x RUN pixels
    BLOCK_R: tl.constexpr,  # patches per program, consecutive in raster order over the map's patches
    BLOCK_C: tl.constexpr,  # channels per program: the contiguous vector axis
    FULL: tl.constexpr,  # the programs' patches tile the map exactly: no output masks (module docstring)
    PAIRS: tl.constexpr,  # x is bfloat16, C even and x 4-byte aligned: load two channels a word
):
    ROWS_IN: tl.constexpr = (ROWS - 1) * STRIDE + K  # input rows a patch reads
    SEG: tl.constexpr = (RUN - 1) * STRIDE + K  # pixels it reads from each of them
    XC: tl.constexpr = C // 2 if PAIRS else C  # loaded elements per input pixel
    XB: tl.constexpr = BLOCK_C // 2 if PAIRS else BLOCK_C  # ... per program and pixel
    EVEN_C: tl.constexpr = C % BLOCK_C == 0  # no channel masks
    pid_r = tl.program_id(0)  # which block of patches
    pid_c = tl.program_id(1)  # which block of channels
    b = tl.program_id(2)  # which image

    per_row = tl.cdiv(Wo, RUN)  # patches side by side
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R] patch index in the map
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C] channel index
    offs_xc = pid_c * XB + tl.arange(0, XB)  # [XB] loaded element index within a pixel
    oy0 = (offs_r // per_row) * ROWS  # the patch's first output row and column
    ox0 = (offs_r % per_row) * RUN
    iy0 = oy0 * STRIDE - PAD_TOP  # input row / column of tap (0, 0) of the patch's first pixel
    ix0 = ox0 * STRIDE - PAD_LEFT
    live = None  # what every load's mask starts from, None for all True
    if not FULL:
        live = (offs_r < tl.cdiv(Ho, ROWS) * per_row)[:, None]  # [BLOCK_R, 1]: patches past the map
    if not EVEN_C:
        live = _and(live, (offs_xc < XC)[None, :])  # [1, XB]: channels past C

    # Image offsets in int64: B * H * W * C can pass 2**31 at batch 64; one image cannot (checked).
    x_img = x_ptr + b.to(tl.int64) * H * W * C
    if PAIRS:
        x_img = x_img.to(tl.pointer_type(tl.uint32), bitcast=True)
    y_img = y_ptr + b.to(tl.int64) * Ho * Wo * C

    # Per-channel vectors (taps, scale, shift) are loaded at the tile's shape [BLOCK_R, BLOCK_C],
    # the same address down the patches, so that each thread loads the channels it owns: a
    # [BLOCK_C] load would get a layout of its own and be shuffled into the tile's through shared
    # memory. Channels past C are loaded as garbage and never stored.
    chan = offs_c[None, :] + 0 * offs_r[:, None]  # [BLOCK_R, BLOCK_C] channel index
    mask_c = None if EVEN_C else chan < C

    accs = ()  # ROWS * RUN x [BLOCK_R, BLOCK_C] float32: output (oy0 + y, ox0 + r) at y * RUN + r
    for p in tl.static_range(ROWS * RUN):
        accs = accs + (tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32),)
    for t in tl.static_range(ROWS_IN):
        # Input row iy0 + t: its address and mask once, then each pixel q of its segment loaded and
        # converted once and added into every output (y, r) whose window holds it, as that
        # output's tap (t - y*STRIDE, q - r*STRIDE).
        row_ok = live
        if not (FULL and t >= PAD_TOP and t < ROWS_IN - PAD_BOTTOM):  # a row only edge patches miss
            row_ok = _and(row_ok, ((iy0 + t >= 0) & (iy0 + t < H))[:, None])
        row = x_img + (((iy0 + t) * W + ix0) * XC)[:, None] + offs_xc[None, :]  # [BLOCK_R, XB] at ix0
        taps = ()  # for each output row y: the K taps of its filter row t - y*STRIDE, or () if none
        for y in tl.static_range(ROWS):
            row_taps = ()
            if t - y * STRIDE >= 0 and t - y * STRIDE < K:
                for j in tl.static_range(K):
                    row_taps = row_taps + (tl.load(w_ptr + ((t - y * STRIDE) * K + j) * C + chan, mask=mask_c),)
            taps = taps + (row_taps,)
        for q in tl.static_range(SEG):
            mask = row_ok
            if not (FULL and q >= PAD_LEFT and q < SEG - PAD_RIGHT):  # a column only edge patches miss
                mask = _and(mask, ((ix0 + q >= 0) & (ix0 + q < W))[:, None])
            xq = _load_as_float32(row + q * XC, mask, PAIRS)  # [BLOCK_R, BLOCK_C] float32
            updated = ()
            for y in tl.static_range(ROWS):
                for r in tl.static_range(RUN):
                    acc = accs[y * RUN + r]
                    if t - y * STRIDE >= 0 and t - y * STRIDE < K and q - r * STRIDE >= 0 and q - r * STRIDE < K:
                        acc = tl.fma(xq, taps[y][q - r * STRIDE], acc)
                    updated = updated + (acc,)
            accs = updated

    # Epilogue on the float32 accumulators: batchnorm, SiLU, store, spatial sums.
    scale = tl.load(scale_ptr + chan, mask=mask_c)
    shift = tl.load(shift_ptr + chan, mask=mask_c)
    total = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    for y in tl.static_range(ROWS):
        out = y_img + (((oy0 + y) * Wo + ox0) * C)[:, None] + offs_c[None, :]  # [BLOCK_R, BLOCK_C] at ox0
        for r in tl.static_range(RUN):
            z = accs[y * RUN + r] * scale + shift
            if ACTIVATION:  # SiLU: z * sigmoid(z), sigmoid(z) = 1 / (1 + 2^(-z log2 e)) = rsqrt(...)^2
                inv_sqrt = tl.math.rsqrt(1.0 + tl.exp2(z * -1.4426950408889634))
                z = z * inv_sqrt * inv_sqrt
            ok = None  # the output pixel exists
            if not FULL:
                ok = (offs_r < tl.cdiv(Ho, ROWS) * per_row)[:, None] & (oy0 + y < Ho)[:, None] \
                    & (ox0 + r < Wo)[:, None]
            if not EVEN_C:
                ok = _and(ok, chan < C)
            tl.store(out + r * C, z.to(y_ptr.dtype.element_ty), mask=ok)
            if WRITE_SUMS:
                if FULL:
                    total += z
                else:
                    total += tl.where(ok, z, 0.0)  # outputs past the map are computed too, and not 0
    if WRITE_SUMS:  # this program's part of the sums, sums[b, pid_r, :]: no other program writes it
        tl.store(sums_ptr + (b * tl.num_programs(0) + pid_r) * C + offs_c, tl.sum(total, axis=0),
                 mask=None if EVEN_C else offs_c < C)


def _block_sizes(Ho: int, Wo: int, channels: int, k: int, stride: int) -> tuple[int, int, int, int, int]:
    """(ROWS, RUN, BLOCK_R, BLOCK_C, num_warps) for an Ho x Wo output map of ``channels`` channels.

    Every thread holds 4 channels of one ROWS x RUN patch (the module docstring), so the sizes
    follow from the patch and the channels:

    - RUN: 5 to 9 columns (fewer on a narrower map), the one that pads Wo least, the widest of
      those: a divisor of Wo when there is one. align-base's maps are 9 * 2**n wide, so RUN = 9
      there. Each input pixel a patch loads then serves about 9 outputs per filter row, where
      the accumulators (ROWS * RUN * 4 float32 per thread) still leave room in 255 registers for
      the loaded segment and the taps.
    - ROWS: 2 for a 5x5 stride-1 conv on a map of even height, else 1. With 25 multiply-adds per
      output the loads are what is left to cut, and a second output row shares 4 of the 6 input
      rows (4.3 loads and conversions per output instead of 7.2). A 3x3 conv is under one
      warp-instruction per output with ROWS = 1 and keeps its registers (~96 per thread, not
      ~170); a stride-2 conv reads 4x the bytes per output, so it is memory-bound either way.
    - BLOCK_C: 64 channels (16 threads across a pixel, 128 contiguous bytes of bfloat16), or the
      largest of 32, 16, 8, 4 that divides C (288, 480: 32), so that no channel is masked; a C
      with no such divisor rounds up to a power of two (the tests' C = 3).
    - BLOCK_R: 128 threads = 4 warps (BLOCK_R * BLOCK_C / 4 threads), halved while it does not
      divide the number of patches when the patches tile the map, so that the programs tile it
      too and nothing is masked (18x18 maps: 36 patches, 4 per program; 9x9: 9, 1 per program);
      on other maps, halved while it leaves more than 10% of the patches idle. BLOCK_C then
      doubles until the program fills a warp.
    """
    per_thread = 4  # channels
    rows = 2 if (k == 5 and stride == 1 and Ho % 2 == 0) else 1
    run = min(range(min(Wo, 9), min(Wo, 5) - 1, -1), key=lambda r: triton.cdiv(Wo, r) * r)
    patches = triton.cdiv(Ho, rows) * triton.cdiv(Wo, run)
    block_c = next((bc for bc in (64, 32, 16, 8, 4) if channels % bc == 0), min(64, triton.next_power_of_2(channels)))
    block_r = max(1, 128 * per_thread // block_c)
    exact = Ho % rows == 0 and Wo % run == 0  # the patches tile the map
    while block_r > 1 and (patches % block_r if exact else triton.cdiv(patches, block_r) * block_r > 1.1 * patches):
        block_r //= 2
    while block_r * block_c < 32 * per_thread:
        block_c *= 2
    num_warps = block_r * block_c // per_thread // 32
    return rows, run, block_r, block_c, num_warps


def depthwise_conv_bn_silu(x, weight, scale, shift, *, stride: int, padding, activation: bool = True,
                           return_sums: bool = True):
    # [B, H, W, C], [C, 1, k, k], [C], [C] -> [B, Ho, Wo, C], [B, P, C]
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
        return_sums: also return the per-(image, channel) sums of the output over space, in P
            parts (the module docstring's "Sums").

    Returns:
        (y, sums): y [B, Ho, Wo, C] in x's dtype, Ho = (H + top + bottom - k) // stride + 1 (and
        likewise Wo); sums [B, P, C] float32, part p the sum of the float32 outputs (before
        rounding) over the pixels of the p-th program's patches, deterministic: the sum over all
        pixels is ``sums.sum(1)``, and ``se_gate`` takes the parts as they are. None when
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

    rows, run, block_r, block_c, num_warps = _block_sizes(Ho, Wo, C, k, stride)
    patches = triton.cdiv(Ho, rows) * triton.cdiv(Wo, run)
    grid = (triton.cdiv(patches, block_r), triton.cdiv(C, block_c), B)
    if grid[1] > 65535 or grid[2] > 65535:  # CUDA's limit on the grid's y and z dimensions
        raise KernelInputError(f"batch {B} or {C} channels exceed the launch grid (65535 blocks per axis)")
    if return_sums and B * grid[0] * C >= 2**31:  # the parts' offsets are int32
        raise KernelInputError(f"the sums' {B} x {grid[0]} x {C} parts are too many for int32 offsets; split the batch")

    y = torch.empty((B, Ho, Wo, C), dtype=x.dtype, device=x.device)
    # Every part is written by its program, so the parts need no zeroing: an allocation, no launch.
    sums = torch.empty((B, grid[0], C), dtype=torch.float32, device=x.device) if return_sums else None
    if y.numel() == 0:
        return y, sums
    taps = weight[:, 0].permute(1, 2, 0).to(torch.float32).contiguous()  # [k, k, C]
    _depthwise_conv_bn_silu_kernel[grid](
        x, taps, scale, shift, y, sums if return_sums else y,  # y: an unused stand-in pointer
        H, W, Ho, Wo,
        C=C, K=k, STRIDE=stride, PAD_TOP=top, PAD_BOTTOM=bottom, PAD_LEFT=left, PAD_RIGHT=right,
        ACTIVATION=activation, WRITE_SUMS=return_sums,
        ROWS=rows, RUN=run, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=num_warps,
        FULL=Ho % rows == 0 and Wo % run == 0 and patches % block_r == 0,
        PAIRS=x.dtype == torch.bfloat16 and C % 2 == 0 and x.data_ptr() % 4 == 0,
    )
    return y, sums
