"""Squeeze-excitation gate: the two tiny fully-connected layers, from per-channel pixel sums.

Math. Squeeze-excitation (Hu et al. 2018) reweights the channels of an image by a gate computed
from the whole image. The squeeze (the spatial mean) is not done here: the depthwise-conv kernel
already emits per-image per-channel pixel *sums*, in P parts (one per block of pixels its
programs cover, ``kernels/depthwise_conv.py``), so this kernel starts from them::

    m[c]  = sum_p sums[b, p, c] / hw                         mean over the hw pixels   [C]
    h[s]  = silu(sum_c W_r[s, c] m[c] + b_r[s])              reduce FC + SiLU         [S]
    g[c]  = sigmoid(sum_s W_e[c, s] h[s] + b_e[c])           expand FC + sigmoid      [C]

and the caller applies ``out[b, y, x, c] = x[b, y, x, c] * g[b, c]``. ``W_r`` is the checkpoint's
1x1 conv weight ``[S, C, 1, 1]``, ``W_e`` ``[C, S, 1, 1]``; in align-base C goes up to 3840 and S
up to 160. For a batch the two FCs are two small matrix products, ``[B, C] x [C, S]`` and
``[B, S] x [S, C]``: 2*B*C*S multiply-adds each. The division by hw is done once per (image, s)
after the sum over C, ``W_r (sums / hw) = (W_r sums) / hw``. The constants C and S are
compile-time (one compiled kernel per (C, S) pair; align-base has nine).

Tiling. The grid is ``(ceil(B / BLOCK_B), ceil(C / CHANNELS_PER_PROGRAM))``: a program takes
``BLOCK_B = 16`` images (the smallest ``tl.dot`` operand) and a range of ``CHANNELS_PER_PROGRAM``
gate channels. All of S fits in one block (``BLOCK_S`` = next power of two >= S, at least 16),
so h stays in registers between the two products:

1. reduce, over all of C in steps of ``BLOCK_K``: ``acc [BLOCK_S, BLOCK_B] += W_r tile
   [BLOCK_S, BLOCK_K] @ sums^T tile [BLOCK_K, BLOCK_B]``, the weight tile as it lies (rows
   contiguous along C) and the sums tile read transposed in place, its P parts loaded and added
   one after another (``PARTS``, compiled in: ptxas unrolls the loop over them completely for
   align-base's P = 9, and keeps a loop unrolled several times for the first blocks' 36 to 288).
   The parts are the price of a depthwise kernel that needs no zeroed buffer (no launch to zero
   it): P times the bytes of the sums, P tiles a step where there was one, which is what the
   kernel lab's count for this kernel rises by. Every program of a row of the
   grid computes the same h for its images: the reduce is repeated once per channel range. That
   is the price of one launch: no program can wait for another's h, and a second kernel
   (reduce, then expand) would double the SE gate's launches, 55 more per align-base forward,
   each costing microseconds of launch latency that the kernel lab does not count, about what
   a whole SE gate is predicted to take. So the launcher keeps the grid to at most ``PROGRAMS``
   programs: one per SM on an A100 (108 SMs) or H100 (132), each repeating the reduce (and so
   the reading of all P parts of its images' sums, mostly from L2) once.
2. ``h = silu(acc / hw + b_r)``, with the padded rows s >= S forced to 0 so they add nothing below.
3. expand, over the program's channels in steps of ``BLOCK_C``: ``e [BLOCK_C, BLOCK_B] = W_e tile
   [BLOCK_C, BLOCK_S] @ h``, plus ``b_e``, the sigmoid, and the ``[BLOCK_C, BLOCK_B]`` gates
   stored transposed into ``gate [B, C]``.

Edges, as in the GEMM: rows past B, S and C are *wrapped* (``% B``, ``% S``, ``% C``) on load, so
the loads need no masks (a wrapped row of h is zeroed in step 2; wrapped images and channels
compute gates that are never stored); the C tail of the reduce is masked with zeros, and only
when ``BLOCK_K`` does not divide C (decided at compile time). The store is masked.

Precision: float32 products on bfloat16 tensor cores. ``tl.dot`` multiplies two operands of
one dtype, and the sums are float32 while the production weights are bfloat16. Rounding the sums
to bfloat16 would keep 8 of their 24 significant bits; "tf32" would keep 11, and needs every
weight converted to float32 first. Instead ``_bf16_parts`` cuts each float32 value into three
bfloat16 values, ``x = hi + mid + lo`` exactly: ``hi`` is ``x`` with the low 16 bits of its
encoding cleared (8 significant bits), ``mid`` the same of ``x - hi``, and ``lo`` the rest (at
most 8 bits). Then ``W x = W hi + W mid + W lo``: three bfloat16 dots whose products are exact
in the float32 accumulator, so the reduce is as accurate as a float32 dot (only the float32
additions round). Float32 or float16 weights are cut the same way (``|mid| < 2^-7 |w|``,
``|lo| < 2^-15 |w|``) and six of the nine products are kept; the three dropped (mid lo, lo mid,
lo lo) are below ``2^-22 |w| |x|``, a few float32 roundings. The expand cuts h the same way for
bfloat16 weights; for other weights it is a plain float32 ``tl.dot`` (``"ieee"``, on the CUDA
cores), because six products of a ``[BLOCK_C, 256]`` tile and their parts spill registers at
S = 160.

The split is that of Henry, Tang & Heinecke (below; cuBLAS calls it "BF16x9"), written out with
bit masks rather than Triton's ``"bf16x3"`` dot precisions: Triton's interpreter implements
neither those nor bfloat16 dots, but it runs the masks and the float32 arithmetic exactly as a
GPU does, so the CPU tests check the GPU's numerics. Under the interpreter ``DOT_DTYPE`` is
float32: the parts are bfloat16 values either way, and their products are exact in float32.

References: Hu, Shen & Sun, "Squeeze-and-Excitation Networks" (2018); Tan & Le, EfficientNet
(2019); Henry, Tang & Heinecke, "Leveraging the bfloat16 Artificial Intelligence Datatype For
Higher-Precision Computations" (2019; the three-way split); ``minialign.backends.reference``:
``squeeze_excite`` (the NumPy reference); transformers ``AlignVisionSqueezeExciteLayer``.

Benchmark: ``benchmarks/batchnorm_silu.py``, with the batchnorm cases. It is in the repository,
not in the installed package, and checks the kernel's output before it times it::

    python benchmarks/batchnorm_silu.py --only se_gate --dry-run    # no GPU: checks only
    python benchmarks/batchnorm_silu.py --only se_gate --out benchmarks/results/se_gate_gpu.json
"""

from __future__ import annotations

import numbers

import triton
import triton.language as tl

from ._checks import INTERPRETED, KernelInputError, check_tensor

_WEIGHT_DTYPE_NAMES = ("float32", "bfloat16", "float16")
MAX_S = 512  # BLOCK_S holds all of S in registers (the h block [BLOCK_S, 16]); align-base needs 160
BLOCK_B = 16  # images per program: tl.dot's smallest operand side
PROGRAMS = 108  # the most programs a launch is cut into: one wave on an A100 (108 SMs) or an H100 (132)


@triton.jit
def _bf16_parts(x):
    # float32 [M, N] -> three float32 [M, N] that hold bfloat16 values, x = hi + mid + lo exactly.
    # -65536 is 0xFFFF0000: clearing the low 16 bits of a float32 leaves a bfloat16 (truncated).
    hi = (x.to(tl.int32, bitcast=True) & -65536).to(tl.float32, bitcast=True)
    rest = x - hi  # exact: the low 16 bits of x's significand
    mid = (rest.to(tl.int32, bitcast=True) & -65536).to(tl.float32, bitcast=True)
    return hi, mid, rest - mid  # the last part has at most 8 significant bits: a bfloat16 too


@triton.jit
def _dot_parts(w, x_hi, x_mid, x_lo, acc, DOT_DTYPE: tl.constexpr):
    # acc + w @ x: w [M, K] in the weights' dtype, x [K, N] float32 as three parts, acc [M, N] float32.
    # The small products first, so that they are not lost against the large ones.
    if w.dtype == tl.bfloat16:
        w_hi = w  # a bfloat16 weight is its own single part
    else:
        w_hi, w_mid, w_lo = _bf16_parts(w.to(tl.float32))
        acc = tl.dot(w_lo.to(DOT_DTYPE), x_hi.to(DOT_DTYPE), acc)
        acc = tl.dot(w_mid.to(DOT_DTYPE), x_mid.to(DOT_DTYPE), acc)
        acc = tl.dot(w_mid.to(DOT_DTYPE), x_hi.to(DOT_DTYPE), acc)
    acc = tl.dot(w_hi.to(DOT_DTYPE), x_lo.to(DOT_DTYPE), acc)
    acc = tl.dot(w_hi.to(DOT_DTYPE), x_mid.to(DOT_DTYPE), acc)
    return tl.dot(w_hi.to(DOT_DTYPE), x_hi.to(DOT_DTYPE), acc)


@triton.jit
def _se_gate_kernel(
    sums_ptr,  # [B, PARTS, C] float32 per-image per-channel pixel sums in PARTS parts, contiguous
    w_r_ptr,  # [S, C] reduce weight (the [S, C, 1, 1] conv weight), contiguous (row stride C)
    b_r_ptr,  # [S] reduce bias
    w_e_ptr,  # [C, S] expand weight (the [C, S, 1, 1] conv weight), contiguous (row stride S)
    b_e_ptr,  # [C] expand bias
    gate_ptr,  # [B, C] float32 output gate, contiguous (row stride C)
    B,  # images
    hw,  # number of pixels (as a float): m = sums / hw
    C: tl.constexpr,  # channels (constexpr: see below)
    S: tl.constexpr,  # squeezed channels
    PARTS: tl.constexpr,  # partial sums per (image, channel), added here as they are loaded
    BLOCK_B: tl.constexpr,  # images per program (>= 16: tl.dot)
    BLOCK_S: tl.constexpr,  # >= S: the whole hidden vector h in one block
    BLOCK_K: tl.constexpr,  # channels per step of the reduce
    BLOCK_C: tl.constexpr,  # gate channels per step of the expand
    CHANNELS_PER_PROGRAM: tl.constexpr,  # gate channels per program, a multiple of BLOCK_C
    DOT_DTYPE: tl.constexpr,  # what tl.dot multiplies the bfloat16 parts in (module docstring)
):
    # C and S are compile-time constants, so a kernel is compiled per (C, S) pair: align-base has
    # a handful of them. A runtime loop bound would do on the GPU, but Triton 3.6's interpreter
    # (our CI) cannot iterate `range(0, C, ...)` over a runtime scalar under NumPy 2.4. Offsets are
    # int32 (the launcher checks B * C and S * C < 2**31).
    b_idx = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B] this program's images
    s_idx = tl.arange(0, BLOCK_S)  # [BLOCK_S]
    s_load = s_idx % S  # wrapped: the rows s >= S repeat real rows and are zeroed in h below
    k_base = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    w_ptrs = w_r_ptr + s_load[:, None] * C + k_base[None, :]  # [BLOCK_S, BLOCK_K] of W_r
    x_ptrs = sums_ptr + (b_idx % B)[None, :] * (PARTS * C) + k_base[:, None]  # [BLOCK_K, BLOCK_B] of part 0^T

    # 1. reduce: acc[s, b] = sum_c W_r[s, c] sums[b, c]
    acc = tl.zeros((BLOCK_S, BLOCK_B), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_K):
        if C % BLOCK_K == 0:  # no C tail: unmasked loads (decided at compile time)
            w = tl.load(w_ptrs)
            x = tl.load(x_ptrs)
            for p in range(1, PARTS):
                x += tl.load(x_ptrs + p * C)
        else:
            k_valid = k_base < C - c0  # [BLOCK_K] false in the C tail: zeros there
            w = tl.load(w_ptrs, mask=k_valid[None, :], other=0.0)
            x = tl.load(x_ptrs, mask=k_valid[:, None], other=0.0)
            for p in range(1, PARTS):
                x += tl.load(x_ptrs + p * C, mask=k_valid[:, None], other=0.0)
        x_hi, x_mid, x_lo = _bf16_parts(x)
        acc = _dot_parts(w, x_hi, x_mid, x_lo, acc, DOT_DTYPE)
        w_ptrs += BLOCK_K
        x_ptrs += BLOCK_K

    # 2. h = silu(W_r m + b_r) with m = sums / hw; the padded rows are 0 (so are the wrapped ones).
    z = acc / hw + tl.load(b_r_ptr + s_load).to(tl.float32)[:, None]
    h = tl.where((s_idx < S)[:, None], z / (1.0 + tl.exp(-z)), 0.0)  # [BLOCK_S, BLOCK_B]
    h_hi, h_mid, h_lo = _bf16_parts(h)

    # 3. expand + sigmoid: g[c, b] = sigmoid(sum_s W_e[c, s] h[s, b] + b_e[c]), BLOCK_C gates a step
    c_first = tl.program_id(1) * CHANNELS_PER_PROGRAM
    for i in range(0, CHANNELS_PER_PROGRAM, BLOCK_C):
        c_idx = c_first + i + tl.arange(0, BLOCK_C)  # [BLOCK_C]
        c_load = c_idx % C  # wrapped past C: computed, never stored
        w = tl.load(w_e_ptr + c_load[:, None] * S + s_load[None, :])  # [BLOCK_C, BLOCK_S] of W_e
        if w.dtype == tl.bfloat16:
            e = _dot_parts(w, h_hi, h_mid, h_lo, tl.zeros((BLOCK_C, BLOCK_B), dtype=tl.float32), DOT_DTYPE)
        else:  # float32 or float16 weights: a float32 dot on the CUDA cores (module docstring)
            e = tl.dot(w.to(tl.float32), h, input_precision="ieee")
        e += tl.load(b_e_ptr + c_load).to(tl.float32)[:, None]
        # 1 / (1 + exp(-e)): for e << 0, exp(-e) overflows to inf and the gate is 0, the limit.
        tl.store(gate_ptr + b_idx[None, :] * C + c_idx[:, None], 1.0 / (1.0 + tl.exp(-e)),
                 mask=(c_idx < C)[:, None] & (b_idx < B)[None, :])


def _as_matrix(name: str, w, rows_name: str, cols_name: str):
    """Accept a 1x1 conv weight ``[R, K, 1, 1]`` (the checkpoint's layout) or a plain ``[R, K]``."""
    if w.ndim == 4 and tuple(w.shape[2:]) == (1, 1):
        return w.view(w.shape[0], w.shape[1])  # free: a contiguous [R, K, 1, 1] is a contiguous [R, K]
    if w.ndim == 2:
        return w
    raise KernelInputError(f"{name} must be a 1x1 conv weight [{rows_name}, {cols_name}, 1, 1] or a matrix "
                           f"[{rows_name}, {cols_name}], got shape {tuple(w.shape)}")


def _config(B: int, C: int, S: int, bfloat16_weights: bool) -> dict:
    """Block sizes for one launch (no autotuning; the kernel lab's report reads what they compile to).

    - ``BLOCK_S``: all of S, at least 16 (tl.dot).
    - ``BLOCK_K``: 64 channels a reduce step with bfloat16 weights ([BLOCK_S, 64] weight tiles
      straight to the tensor cores); 32 with float32 or float16 weights, whose tiles are cut
      into three parts in registers.
    - ``BLOCK_C``: expand tiles of about 4096 weights, 16 to 64 channels (S = 160: 16).
    - ``CHANNELS_PER_PROGRAM``: the channels split into as few ranges as fill ``PROGRAMS``
      programs, each a whole number of ``BLOCK_C`` steps; more programs than SMs would only queue
      up programs that repeat the reduce.
    """
    block_s = max(16, triton.next_power_of_2(S))
    block_k = min(64 if bfloat16_weights else 32, max(16, triton.next_power_of_2(C)))
    block_c = min(max(16, 4096 // block_s), 64, max(16, triton.next_power_of_2(C)))
    ranges = max(1, min(triton.cdiv(C, block_c), PROGRAMS // triton.cdiv(B, BLOCK_B)))
    per_program = triton.cdiv(triton.cdiv(C, ranges), block_c) * block_c
    return dict(BLOCK_B=BLOCK_B, BLOCK_S=block_s, BLOCK_K=block_k, BLOCK_C=block_c,
                CHANNELS_PER_PROGRAM=per_program)


def se_gate(sums, hw: int, reduce_weight, reduce_bias, expand_weight, expand_bias):
    """Squeeze-excitation gate ``sigmoid(W_e silu(W_r (sums / hw) + b_r) + b_e)``, per image.

    Args:
        sums: ``[B, C]`` float32, contiguous: per-image per-channel sums over the pixels; or
            ``[B, P, C]``, the same sums in P parts (the depthwise kernel's), added here.
        hw: the number of pixels summed (H * W), a positive int.
        reduce_weight: ``[S, C, 1, 1]`` (or ``[S, C]``), contiguous; float32, bfloat16 or float16.
        reduce_bias: ``[S]``, contiguous, the weights' dtype.
        expand_weight: ``[C, S, 1, 1]`` (or ``[C, S]``), contiguous, the weights' dtype.
        expand_bias: ``[C]``, contiguous, the weights' dtype.

    Returns:
        The gate, ``[B, C]`` float32 with values in [0, 1]; the block's output is ``x * gate``.
        Both products are as accurate as float32 dots, whatever the weights' dtype.
    """
    import torch

    check_tensor("sums", sums, dtypes=(torch.float32,), contiguous=True)
    if sums.ndim == 2:
        sums = sums.unsqueeze(1)  # [B, C] is one part
    if sums.ndim != 3:
        raise KernelInputError(f"sums must be [B, C] or [B, parts, C], got shape {tuple(sums.shape)}")
    B, parts, C = sums.shape
    if isinstance(hw, bool) or not isinstance(hw, numbers.Integral) or hw <= 0:
        raise KernelInputError(f"hw must be a positive int (the number of pixels summed), got {hw!r}")
    wdtypes = tuple(getattr(torch, n) for n in _WEIGHT_DTYPE_NAMES)
    check_tensor("reduce_weight", reduce_weight, dtypes=wdtypes, device=sums.device, contiguous=True)
    w_r = _as_matrix("reduce_weight", reduce_weight, "S", "C")
    S = w_r.shape[0]
    if w_r.shape[1] != C:
        raise KernelInputError(f"reduce_weight has {w_r.shape[1]} input channels but sums has C={C}")
    if not 1 <= S <= MAX_S:
        raise KernelInputError(f"the squeezed width S={S} is unsupported (1 <= S <= {MAX_S})")
    wdtype = reduce_weight.dtype
    check_tensor("expand_weight", expand_weight, dtypes=(wdtype,), device=sums.device, contiguous=True)
    w_e = _as_matrix("expand_weight", expand_weight, "C", "S")
    if tuple(w_e.shape) != (C, S):
        raise KernelInputError(f"expand_weight must be [C={C}, S={S}] to match sums and reduce_weight, "
                               f"got {tuple(expand_weight.shape)}")
    check_tensor("reduce_bias", reduce_bias, shape=(S,), dtypes=(wdtype,), device=sums.device, contiguous=True)
    check_tensor("expand_bias", expand_bias, shape=(C,), dtypes=(wdtype,), device=sums.device, contiguous=True)
    if max(B * parts, S) * C >= 2**31:  # the kernel's offsets are int32
        raise KernelInputError(f"sums [B, P, C] = [{B}, {parts}, {C}] or the weights [S, C] = [{S}, {C}] have 2**31 "
                               "elements or more; split the batch")

    gate = torch.empty((B, C), dtype=torch.float32, device=sums.device)
    if B == 0 or C == 0:
        return gate
    config = _config(B, C, S, wdtype == torch.bfloat16)
    grid = (triton.cdiv(B, BLOCK_B), triton.cdiv(C, config["CHANNELS_PER_PROGRAM"]))
    _se_gate_kernel[grid](
        sums, w_r, reduce_bias, w_e, expand_bias, gate, B, float(hw), C, S, parts,
        DOT_DTYPE=tl.float32 if INTERPRETED else tl.bfloat16, num_warps=4, **config,
    )
    return gate
