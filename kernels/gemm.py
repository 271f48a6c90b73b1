"""GEMM with a fused epilogue: every linear layer and 1x1 convolution of ALIGN in one kernel.

Math. With ``A`` the activations ``[M, K]`` (BERT: ``M = B*T`` tokens; EfficientNet: ``M = B*H*W``
pixels of a channels-last feature map) and ``W`` the weight ``[N, K]`` exactly as the checkpoint
stores it (``nn.Linear.weight``, or a 1x1 conv weight ``[N, K, 1, 1]``)::

    A'[m, k]  = A[m, k] * a_scale[m // rows_per_image, k]       optional, see below     [M, K]
    P[m, n]   = sum_k A'[m, k] W[n, k]                           = A' W^T, float32 acc   [M, N]
    C[m, n]   = act(P[m, n] * col_scale[n] + col_shift[n]) + residual[m, n]             [M, N]

- ``col_scale``/``col_shift`` is an eval-mode batchnorm folded into one multiply-add
  (``scale = gamma / sqrt(var + eps)``, ``shift = beta - mean * scale``); a plain bias is a shift
  with no scale. Either may be absent.
- ``act`` is none, ``"gelu"`` (exact: ``x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))``, BERT's),
  ``"gelu_tanh"`` (``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, GPT-2's "gelu_new") or
  ``"silu"`` (``x * sigmoid(x)``, EfficientNet's "swish").
- ``residual`` is added after the activation (EfficientNet's MBConv skip, BERT's sublayer skip).
- ``a_scale`` is the squeeze-excitation gate ``[B, K]``: in an MBConv block the projection 1x1
  conv reads ``x * gate[b, None, None, :]``. ``A`` holds ``B`` images of ``rows_per_image = H*W``
  consecutive rows each, so row ``m`` belongs to image ``m // rows_per_image``. Scaling the A
  tile as it is loaded saves a full write + read of the ``[M, K]`` gated activations -- the
  widest tensor of the block (K = 6x the block's width).

A fused epilogue is only worth fusing if it is nearly free: the kernel lab (``minialign kernels
report``) prices each GEMM against the same GEMM without its epilogue. Three choices keep it
cheap, each counted in the SASS:

- The exact GELU is not ``0.5 x (1 + erf(x / sqrt 2))`` with libdevice's ``erf`` (32 SASS
  instructions per element on sm_90a, the ``0.5 x (1 + ...)`` included) but Abramowitz &
  Stegun 26.2.17, one degree-5 polynomial in ``1 / (1 + 0.23 |x|)`` times ``exp(-x^2 / 2)``:
  15 instructions, within 4e-7 of the exact GELU in float32 (``_gelu``; ``tests/test_gemm.py``
  measures it on a dense grid).
- Sigmoids (SiLU, the tanh GELU) and that reciprocal use ``exp2`` and ``rsqrt(d)^2`` for ``1/d``
  (``_reciprocal``): the bare MUFU instructions, where ``tl.exp`` and float32 division add
  range checks that these arguments never need.
- The gate multiplies A in A's dtype: in bfloat16 one packed multiply per two elements, and the
  gated tile stays 16-bit in registers for the tensor cores, where a float32 detour cost a
  conversion per element each way and twice the registers.

Used for: BERT's Q/K/V and output projections and FFN (bias; + GELU; + residual), the
EfficientNet expansion conv (BN affine + SiLU) and projection conv (SE gate on A, BN affine,
+ residual).

LayerNorm epilogue (``layer_norm=(gamma, beta, eps)``, BERT's output projection and FFN2):
``C = LayerNorm(act(...) + residual)`` over whole rows, though a tile holds only part of a row.
Each tile stores its pre-norm rows and, per row, the mean and sum of squared deviations of its
columns (float32 scratch ``[2, tiles, M]``), then bumps its row block's counter (acquire-release
atomic); the last tile of the block to arrive resets the counter, combines the tiles' statistics
with the parallel-variance formula (Chan et al.) and normalises the block's rows in place. No
program waits for another; docs/kernels/gemm.md, "LayerNorm in the epilogue", has the details.

Tiling (the classic blocked matmul of Triton's tutorial 03). The output is cut into
``BLOCK_M x BLOCK_N`` tiles, one program each. A program walks K in steps of ``BLOCK_K``: it loads
a ``[BLOCK_M, BLOCK_K]`` tile of A (times the matching rows of ``a_scale``) and a
``[BLOCK_K, BLOCK_N]`` tile of ``W^T`` -- read in place from ``W [N, K]`` by swapping strides, no
transposed copy -- and accumulates their product in float32 with ``tl.dot`` (tensor cores). The
epilogue runs on the float32 accumulator while it is still in registers, and the tile is stored
once, in the output dtype.

- Grouped ordering: consecutive program ids walk down a column of ``GROUP_M`` tiles before
  moving right, so programs running at the same time share A row-panels and W column-panels in
  L2 (tutorial 03 measures ~10% from this on large matrices).
- Tails: rows/columns past M/N are *wrapped* (``% M``, ``% N``) on load, so the inner loop loads
  without masks (the extra rows compute garbage that is never stored); the K tail is masked with
  zeros, which add nothing to the dot product (K is a compile-time constant, so when BLOCK_K
  divides it the mask disappears). The store is masked. Any M, N >= 1 and K >= 0 works.
- Block sizes come from a small fixed table (``CONFIGS``, picked by ``_config``), no autotuning,
  each entry chosen from a sweep of tiles on paper (``benchmarks/gemm_configs.py``: every GEMM
  of align-base compiled for H100 and A100 at each candidate and timed by the kernel lab's
  roofline). In 16-bit: 128 x 256 x 64 with 8 warps for wide outputs (N >= 512, tutorial 03's
  best on Hopper), 128 x 128 x 64 with 4 warps for narrow ones, with 8 warps for the GELU (98
  registers: two blocks per SM on an H100), and 128 x 128 x 32 with 4 warps for the gate (a
  32-deep gated A tile is what fits the registers). In float32, 64 x 64 x 32, and 128 x 64 x 32
  with 8 warps when there is a gate.

References: Triton tutorial 03 "Matrix Multiplication" (python/tutorials/03-matrix-multiplication.py);
Liger-Kernel's fused linear ops; ``minialign.backends.reference``: ``linear``, ``pointwise_conv``,
``batch_norm``, ``squeeze_excite``, ``gelu``, ``gelu_new``, ``silu`` (the NumPy reference);
transformers ``AlignVisionBlock`` and ``BertIntermediate``.

Benchmark: ``benchmarks/gemm.py``. It is in the repository, not in the installed package,
and checks the kernel's output before it times it::

    python benchmarks/gemm.py --dry-run    # no GPU: checks only
    python benchmarks/gemm.py --out benchmarks/results/gemm_gpu.json
"""

from __future__ import annotations

import numbers

import triton
import triton.language as tl

from ._checks import INTERPRETED, KernelInputError, check_tensor

ACTIVATIONS = (None, "gelu", "gelu_tanh", "silu")


@triton.jit
def _reciprocal(d):
    """``1 / d`` for ``d >= 1`` (or +inf, giving 0) as ``rsqrt(d)^2``: two instructions.

    Triton divides float32 with ``div.full.f32``, which ptxas turns into eight instructions
    (range checks and rescaling around the reciprocal, MUFU.RCP); the hardware reciprocal square
    root (MUFU.RSQ) needs none of that for an argument of at least 1. Relative error ~3e-7.
    """
    r = tl.math.rsqrt(d)
    return r * r


@triton.jit
def _sigmoid(x):
    """``1 / (1 + exp(-x))``. exp overflows to +inf for very negative x, giving 0, the right limit.

    Written with ``exp2`` (``exp(-x) = exp2(-x log2 e)``), which Triton compiles to the bare
    MUFU.EX2; ``tl.exp`` adds three instructions (a compare and two multiplies) that keep
    subnormal results, not needed here.
    """
    return _reciprocal(1.0 + tl.exp2(x * -1.4426950408889634))  # -log2(e)


@triton.jit
def _gelu(x):
    """Exact GELU, ``x * Phi(x)``, to within 4e-7 in float32, in 15 instructions (libdevice's erf: 32).

    Abramowitz & Stegun 26.2.17 for the normal CDF: for ``x >= 0``,
    ``1 - Phi(x) = phi(x) (b1 t + b2 t^2 + b3 t^3 + b4 t^4 + b5 t^5)``, ``t = 1 / (1 + 0.2316419 x)``,
    ``phi(x) = exp(-x^2 / 2) / sqrt(2 pi)``, with an absolute error below 7.5e-8. The same
    ``q = 1 - Phi(|x|)`` gives ``Phi(x) = q`` for negative x (computed directly: no cancellation in
    the tail) and ``1 - q`` for positive x. The polynomial's coefficients below are
    ``b_i / sqrt(2 pi)``; the exponential is ``exp2(-x^2 / 2 * log2(e))``, which underflows to 0
    for large |x|, so GELU(x) = x there (and -0 for large negative x).
    """
    t = _reciprocal(1.0 + 0.2316419 * tl.abs(x))
    poly = 0.1274147959 + t * (-0.1422483683 + t * (0.7107068707 + t * (-0.7265760131 + t * 0.5307027143)))
    q = t * poly * tl.exp2(x * (x * -0.7213475204444817))  # -0.5 * log2(e)
    return x * tl.where(x >= 0, 1.0 - q, q)


@triton.jit
def _normalise_rows(c_ptr, stats_ptr, norm_weight_ptr, norm_bias_ptr, pid_m, M, N, stride_cm, eps,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NORM_TILES: tl.constexpr, EVEN_N: tl.constexpr):
    """LayerNorm in place of row block ``pid_m`` of C (``BLOCK_M`` rows), every tile of it stored.

    The row statistics combine the tiles' (Chan, Golub & LeVeque's parallel variance): with tile
    j's n_j columns, mean m_j and sum of squared deviations S_j, the row's mean is
    ``sum_j n_j m_j / N`` and its sum of squared deviations ``sum_j S_j + n_j (m_j - mean)^2``,
    as accurate as two passes over the row (no ``E[v^2] - E[v]^2`` cancellation). The other tiles'
    stores are read with ``.cg`` (from L2, never a stale L1 line), as the just-written rows are:
    a row block is 128 x 768 x 2 B = 192 KiB in bfloat16, written moments ago, still in L2.

    Each element is then centred before it is scaled, ``(v - mean) * rstd * gamma + beta``: a row
    whose values all equal its mean gives exactly ``beta``, where the two-FMA form
    ``v * rstd - mean * rstd`` would leave the rounding of ``mean * rstd`` (up to ~0.06 |mean|
    with eps = 1e-12). Rows past M are masked; columns only when
    BLOCK_N does not divide N. (The statistics' loads clamp rows past M to the last row instead:
    in bounds, no mask, never stored.)
    """
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] unwrapped, for the store's mask
    rows = tl.minimum(offs_m, M - 1)  # [BLOCK_M] clamped, for loads
    total = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for j in tl.static_range(NORM_TILES):
        total += tl.minimum(N - j * BLOCK_N, BLOCK_N).to(tl.float32) * tl.load(stats_ptr + j * M + rows,
                                                                             cache_modifier=".cg")
    inv_n = 1.0 / N.to(tl.float32)  # a scalar: one division, not one per row
    mean = total * inv_n
    squares = tl.zeros((BLOCK_M,), dtype=tl.float32)  # sum of squared deviations from the row's mean
    for j in tl.static_range(NORM_TILES):
        shift = tl.load(stats_ptr + j * M + rows, cache_modifier=".cg") - mean
        squares += (tl.load(stats_ptr + (NORM_TILES + j) * M + rows, cache_modifier=".cg")
                    + tl.minimum(N - j * BLOCK_N, BLOCK_N).to(tl.float32) * shift * shift)
    rstd = tl.math.rsqrt(squares * inv_n + eps)  # [BLOCK_M] MUFU.RSQ, relative error ~1e-7
    for j in tl.static_range(NORM_TILES):
        offs_n = j * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
        if EVEN_N:
            n_valid = tl.full((BLOCK_N,), True, tl.int1)
        else:
            n_valid = offs_n < N
        mask = (offs_m[:, None] < M) & n_valid[None, :]
        v = tl.load(c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :], mask=mask,
                    cache_modifier=".cg").to(tl.float32)
        gamma = tl.load(norm_weight_ptr + offs_n, mask=n_valid).to(tl.float32)
        beta = tl.load(norm_bias_ptr + offs_n, mask=n_valid).to(tl.float32)
        y = (v - mean[:, None]) * rstd[:, None] * gamma[None, :] + beta[None, :]  # [BLOCK_M, BLOCK_N]
        tl.store(c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :], y.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gemm_epilogue_kernel(
    a_ptr,  # [M, K] activations, any strides (stride_am, stride_ak)
    w_ptr,  # [N, K] weight as stored by the checkpoint, any strides (stride_wn, stride_wk)
    c_ptr,  # [M, N] output, contiguous (row stride stride_cm, unit column stride)
    a_scale_ptr,  # [B, K] per-(image, input channel) scale on A (the SE gate), or None
    col_scale_ptr,  # [N] contiguous per-output-channel scale (folded BN), or None
    col_shift_ptr,  # [N] contiguous per-output-channel shift (bias / folded BN), or None
    residual_ptr,  # [M, N] added after the activation, any strides (stride_rm, stride_rn), or None
    norm_weight_ptr,  # [N] contiguous LayerNorm gain (gamma) over each whole row of C, or None: no LayerNorm
    norm_bias_ptr,  # [N] contiguous LayerNorm shift (beta); given with norm_weight_ptr
    stats_ptr,  # [2, NORM_TILES, M] float32 scratch: each tile's row means, then its rows' sums of
    #   squared deviations from those means (LayerNorm only)
    counter_ptr,  # [>= cdiv(M, BLOCK_M)] int32, zero at launch and left zero: tiles of each row block
    #   that have stored their part (LayerNorm only)
    M, N,  # output size: C[M, N] = A[M, K] W[N, K]^T
    K: tl.constexpr,  # reduction length, a compile-time constant: one compile per layer width (~15 in ALIGN).
    #   It makes the loop bound a Python int (which Triton 3.6's interpreter needs with NumPy >= 2.4)
    #   and lets the compiler drop the K-tail mask when BLOCK_K divides K (BERT's 768 and 3072).
    rows_per_image,  # rows of A per image: row m reads a_scale[m // rows_per_image]
    stride_am, stride_ak,  # A: elements between rows / between input channels
    stride_wn, stride_wk,  # W: elements between output channels / between input channels
    stride_cm,  # C: elements between rows
    stride_sb, stride_sk,  # a_scale: elements between images / between input channels
    stride_rm, stride_rn,  # residual: elements between rows / between columns
    eps,  # LayerNorm: added to the variance
    ACTIVATION: tl.constexpr,  # None, "gelu", "gelu_tanh" or "silu"
    DOT_PRECISION: tl.constexpr,  # "ieee" for float32 inputs (true fp32, as torch's default);
    #   "tf32" otherwise, which 16-bit inputs ignore
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,  # output tile and K step
    GROUP_M: tl.constexpr,  # tile rows per group in the grouped ordering
    NORM_TILES: tl.constexpr,  # LayerNorm: tiles across a row, cdiv(N, BLOCK_N) (0 without one)
    EVEN_N: tl.constexpr,  # LayerNorm: BLOCK_N divides N, so the normalising pass needs no column masks
):
    # -- which output tile: grouped ordering (tutorial 03) -------------------------------------
    pid = tl.program_id(axis=0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)  # the last group may be shorter
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # -- pointers to the first K step -----------------------------------------------------------
    # Rows/columns past the edge wrap around (see the module docstring): loads stay in bounds.
    offs_am = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M  # [BLOCK_M] rows of A
    offs_wn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N  # [BLOCK_N] rows of W = columns of C
    offs_k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    a_ptrs = a_ptr + offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak  # [BLOCK_M, BLOCK_K]
    w_ptrs = w_ptr + offs_k[:, None] * stride_wk + offs_wn[None, :] * stride_wn  # [BLOCK_K, BLOCK_N]: W^T
    if a_scale_ptr is not None:
        image = offs_am // rows_per_image  # [BLOCK_M] which image each row belongs to
        s_ptrs = a_scale_ptr + image[:, None] * stride_sb + offs_k[None, :] * stride_sk  # [BLOCK_M, BLOCK_K]

    # -- main loop: acc += A_tile @ W^T_tile over K ---------------------------------------------
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):  # K is a compile-time constant, see its comment above
        if K % BLOCK_K == 0:  # no K tail: unmasked loads (decided at compile time)
            k_valid = tl.full((BLOCK_K,), True, tl.int1)
        else:
            k_valid = offs_k < K - k0  # [BLOCK_K] false in the K tail: load zeros there
        a = tl.load(a_ptrs, mask=k_valid[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_valid[:, None], other=0.0)
        if a_scale_ptr is not None:
            # The gate in A's dtype times A, in A's dtype: in bfloat16 one packed multiply per two
            # elements (HMUL2.BF16_V2 on sm_90a, HFMA2.BF16_V2 on sm_80), exactly the product
            # rounded once, as torch's eager `x * gate` in bfloat16; the tile stays 16-bit for
            # the tensor cores. (In float32 the gated tile would double the registers A's tile
            # needs, and cost a conversion per element each way.)
            s = tl.load(s_ptrs, mask=k_valid[None, :], other=0.0)
            a = a * s.to(a.dtype)
            s_ptrs += BLOCK_K * stride_sk
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        w_ptrs += BLOCK_K * stride_wk

    # -- epilogue, on the float32 accumulator ---------------------------------------------------
    offs_cm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] unwrapped, for the masked store
    offs_cn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    n_valid = offs_cn < N
    c_mask = (offs_cm[:, None] < M) & n_valid[None, :]  # [BLOCK_M, BLOCK_N]
    if col_scale_ptr is not None:
        acc = acc * tl.load(col_scale_ptr + offs_cn, mask=n_valid, other=0.0).to(tl.float32)[None, :]
    if col_shift_ptr is not None:
        acc = acc + tl.load(col_shift_ptr + offs_cn, mask=n_valid, other=0.0).to(tl.float32)[None, :]
    if ACTIVATION == "gelu":
        acc = _gelu(acc)
    elif ACTIVATION == "gelu_tanh":
        # 0.5 x (1 + tanh(u)) == x * sigmoid(2u): one exp, no tanh.
        u = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)  # sqrt(2/pi) (x + 0.044715 x^3)
        acc = acc * _sigmoid(2.0 * u)
    elif ACTIVATION == "silu":
        acc = acc * _sigmoid(acc)
    if residual_ptr is not None:
        r_ptrs = residual_ptr + offs_cm[:, None] * stride_rm + offs_cn[None, :] * stride_rn
        acc = acc + tl.load(r_ptrs, mask=c_mask, other=0.0).to(tl.float32)
    if norm_weight_ptr is not None:
        # This tile's share of its rows' statistics, from the float32 values before the store
        # rounds them: the mean of its n valid columns and the sum of squared deviations from it
        # (columns past N wrapped to real ones: zeroed, and not counted).
        n = tl.minimum(N - pid_n * BLOCK_N, BLOCK_N)
        acc = tl.where(n_valid[None, :], acc, 0.0)
        tile_mean = tl.sum(acc, axis=1) / n.to(tl.float32)  # [BLOCK_M]
        deviation = tl.where(n_valid[None, :], acc - tile_mean[:, None], 0.0)
        m_valid = offs_cm < M
        tl.store(stats_ptr + pid_n * M + offs_cm, tile_mean, mask=m_valid)
        tl.store(stats_ptr + (NORM_TILES + pid_n) * M + offs_cm, tl.sum(deviation * deviation, axis=1), mask=m_valid)
    c_ptrs = c_ptr + offs_cm[:, None] * stride_cm + offs_cn[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)  # with a LayerNorm: the rows before it

    if norm_weight_ptr is not None:
        # The last of a row block's NORM_TILES tiles to get here normalises the whole block. The
        # barrier orders every thread's stores above before the counter's release (the atomic is
        # one thread's); its acquire makes the other tiles' stores visible to this program.
        tl.debug_barrier()
        arrived = tl.atomic_add(counter_ptr + pid_m, 1, sem="acq_rel", scope="gpu")
        if arrived == NORM_TILES - 1:
            tl.atomic_xchg(counter_ptr + pid_m, 0, sem="relaxed", scope="gpu")  # zero again for the next launch
            _normalise_rows(c_ptr, stats_ptr, norm_weight_ptr, norm_bias_ptr, pid_m, M, N, stride_cm, eps,
                            BLOCK_M, BLOCK_N, NORM_TILES, EVEN_N)


def _tile(bm: int, bn: int, bk: int, warps: int, stages: int) -> dict:
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, num_warps=warps, num_stages=stages)


# The GPU configurations, keyed on what tells align-base's GEMMs apart. Each was chosen from
# benchmarks/gemm_configs.py: every GEMM one align-base forward launches, compiled for H100 and
# A100 at each candidate tile and predicted by the kernel lab (results in
# benchmarks/results/gemm_configs.json; times below are us for all launches of a forward, H100 /
# A100, with the bare GEMM -- A and W alone -- in brackets).
CONFIGS = {
    # BERT's Q/K/V/O and FFN-down GEMMs and the wide expansions (N >= 512): tutorial 03's top
    # Hopper tile, 3 * (128*64 + 64*256) * 2 B = 144 KiB of shared memory. Every one of them is
    # at its math or memory floor on both GPUs (M=16384 N=768 K=768 x49: 939.3 / 2979.1).
    "16-bit wide": _tile(128, 256, 64, 8, 3),
    # N < 512 (most expansions; the bare projections): a 256-wide tile wastes columns and leaves
    # too few tiles for 132 SMs. The SiLU expansions sit at the memory floor (M=331776 N=288 K=48
    # x7: 465.9 / 780.4, as their bare GEMMs).
    "16-bit narrow": _tile(128, 128, 64, 4, 4),
    # BERT's FFN up-projection with the exact GELU. Every candidate is math-bound (938.0 / 2973.4,
    # as the bare GEMM); this one holds 98 registers on sm_90a, so two blocks share an SM and one's
    # epilogue overlaps the other's main loop, and issues the least on the A100.
    "16-bit gelu": _tile(128, 128, 64, 8, 3),
    # The SE-gated projections. BLOCK_K = 32 halves the gated A tile held in registers: with 4
    # warps, 212-246 registers and no spills on either GPU, where BLOCK_K = 64 spills on sm_80
    # (255). At the memory or math floor on every gated GEMM but two of the A100's (M=5184 N=384
    # K=1344: 18.0 [17.2], K=2304 + residual x12: 364.4 [352.8]); the 8-warp 128x128x64 tile had
    # been issue-bound on those (24.4, 489.7) and on M=1327104 N=32 K=32 + residual x3 (241.3 /
    # 478.0 where the memory floor is 228.2 / 382.2).
    "16-bit gate": _tile(128, 128, 32, 4, 4),
    # float32: "ieee" FFMA dot products, no tensor cores, issue- or math-bound. 64x64 with 4
    # warps: 128 registers and 4 blocks per SM on the H100.
    "float32": _tile(64, 64, 32, 4, 3),
    # float32 with the gate: the gated tile costs registers, and at 64x64 with 4 warps the H100's
    # 158 left 3 blocks per SM (M=5184 N=384 K=2304 + residual x12: 3240.7 [2090.4]). 128x64
    # with 8 warps holds 128 (there 2199.9): within 7% of the bare GEMM on every gated GEMM of
    # both GPUs, but for M=1327104 N=32 K=32 + residual, whose residual's bytes alone set its
    # memory floor (456.4 / 764.4 [352.9 / 595.6]).
    "float32 gate": _tile(128, 64, 32, 8, 3),
}


def _config(dtype, N: int, has_a_scale: bool, activation: str | None = None) -> dict:
    """Block sizes, warps and pipeline depth: a fixed table (``CONFIGS``), no autotuning.

    Under the interpreter (CPU tests) small tiles, so the tests' tiny shapes still span several
    tiles and K steps (tails, wrapping and grouping get exercised); 16 is tl.dot's minimum. On a
    GPU the entry of ``CONFIGS`` for the dtype and epilogue; the kernel lab's report names the
    tile, warps and stages of every launch.
    """
    import torch

    if INTERPRETED:
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, GROUP_M=2, num_warps=4, num_stages=1)
    if dtype == torch.float32:
        name = "float32 gate" if has_a_scale else "float32"
    elif has_a_scale:
        name = "16-bit gate"
    elif activation == "gelu":
        name = "16-bit gelu"
    else:
        name = "16-bit wide" if N >= 512 else "16-bit narrow"
    return dict(CONFIGS[name])


# Per device, int32 counters the LayerNorm epilogue counts a row block's finished tiles in. Made
# zero once (a fill, on a device's first GEMM + LayerNorm or a larger M), and left zero by every
# launch (the last tile of a row block resets its counter), so no launch needs a fill of its own.
# Launches that run at once on two streams of one device would share them: the Triton backend
# runs on one stream.
_TILE_COUNTERS: dict = {}


def _tile_counters(device, n: int):
    """At least ``n`` int32 zeros on ``device``, kept from one launch to the next."""
    import torch

    counters = _TILE_COUNTERS.get(device)
    if counters is None or counters.numel() < n:
        counters = _TILE_COUNTERS[device] = torch.zeros(triton.next_power_of_2(max(n, 256)), dtype=torch.int32,
                                                        device=device)
    return counters


def gemm(a, w, *, bias=None, scale=None, shift=None, activation: str | None = None, residual=None,
         a_scale=None, rows_per_image: int | None = None, layer_norm=None, config: dict | None = None):
    """``C = act((A * a_scale[image]) @ W^T * scale + shift) + residual``, in one kernel
    (then, with ``layer_norm``, each row of that normalised).

    Args:
        a: ``[M, K]`` activations, float32 / bfloat16 / float16 (float32 only under the
            interpreter). Any strides (a transposed view works; a contiguous one is fastest).
        w: ``[N, K]`` weight (``nn.Linear.weight``) or ``[N, K, 1, 1]`` (a 1x1 conv weight), same
            dtype as ``a``, read in place with its strides.
        bias: ``[N]``, added to every row. Shorthand for ``shift``; not combinable with
            ``scale``/``shift`` (fold a bias into ``shift`` yourself when there is a scale).
        scale: ``[N]`` per-output-channel scale (batchnorm folded: ``gamma / sqrt(var + eps)``).
        shift: ``[N]`` per-output-channel shift, added after ``scale``.
            ``bias``/``scale``/``shift`` are contiguous, in ``a``'s dtype or float32.
        activation: None, ``"gelu"`` (exact erf form), ``"gelu_tanh"`` or ``"silu"``; applied
            after scale/shift.
        residual: ``[M, N]`` in ``a``'s dtype, any strides; added after the activation.
        a_scale: ``[B, K]`` scale on A per (image, input channel), e.g. the squeeze-excitation
            gate; in ``a``'s dtype or float32, any strides. Needs ``rows_per_image``.
        rows_per_image: rows of ``a`` per image (``H*W``): row ``m`` is scaled by
            ``a_scale[m // rows_per_image]``; must divide M, with ``M // rows_per_image == B``.
        layer_norm: ``(weight, bias, eps)``: LayerNorm over each whole row of the result, last
            (BERT's ``LayerNorm(dense(x) + residual)``); ``weight``, ``bias`` ``[N]`` contiguous,
            both float32 or both in ``a``'s dtype; ``eps >= 0`` added to the variance.
        config: for benchmarks only: entries that override ``_config``'s table (BLOCK_M,
            BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages), to compare tile shapes.

    Returns:
        ``[M, N]`` contiguous, in ``a``'s dtype (accumulated and post-processed in float32,
        rounded once at the store).
    """
    import torch

    io_dtypes = (torch.float32,) if INTERPRETED else (torch.float32, torch.bfloat16, torch.float16)
    check_tensor("a", a, ndim=2)
    if a.dtype not in io_dtypes:
        extra = " (the Triton interpreter runs float32 only)" if INTERPRETED else ""
        raise KernelInputError(f"a must have dtype in {[str(d) for d in io_dtypes]}, got {a.dtype}{extra}")
    device, dtype = a.device, a.dtype
    M, K = a.shape
    check_tensor("w", w, dtypes=(dtype,), device=device)
    if w.ndim == 4 and w.shape[2:] == (1, 1):
        w = w[:, :, 0, 0]  # a 1x1 conv weight: a strided view, no copy
    if w.ndim != 2:
        raise KernelInputError(f"w must be [N, K] or a 1x1 conv weight [N, K, 1, 1], got shape {tuple(w.shape)}")
    N = w.shape[0]
    if w.shape[1] != K:
        raise KernelInputError(f"w is [N, K] = {tuple(w.shape)} but a is [M, K] = {tuple(a.shape)}: K differs")

    vector_dtypes = (dtype, torch.float32)
    if bias is not None:
        if scale is not None or shift is not None:
            raise KernelInputError("give either bias, or scale and/or shift (bias is a shift without scale), "
                                   "not both; fold a bias into shift: shift = bias * scale + shift")
        shift = bias
    for name, v in (("bias" if bias is not None else "shift", shift), ("scale", scale)):
        if v is not None:
            check_tensor(name, v, shape=(N,), dtypes=vector_dtypes, device=device, contiguous=True)

    if activation not in ACTIVATIONS:
        raise KernelInputError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")

    if residual is not None:
        check_tensor("residual", residual, shape=(M, N), dtypes=(dtype,), device=device)

    if layer_norm is not None:
        if not isinstance(layer_norm, (tuple, list)) or len(layer_norm) != 3:
            raise KernelInputError("layer_norm must be (weight, bias, eps): the LayerNorm's gain and shift [N] "
                                   "and the epsilon added to the variance")
        norm_weight, norm_bias, eps = layer_norm
        check_tensor("layer_norm weight", norm_weight, shape=(N,), dtypes=vector_dtypes, device=device,
                     contiguous=True)
        check_tensor("layer_norm bias", norm_bias, shape=(N,), dtypes=(norm_weight.dtype,), device=device,
                     contiguous=True)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
            raise KernelInputError(f"layer_norm eps must be a real number >= 0, got {eps!r}")
    else:
        norm_weight = norm_bias = None
        eps = 0.0

    if (a_scale is None) != (rows_per_image is None):
        raise KernelInputError("a_scale and rows_per_image go together: a_scale [B, K] scales row m of a by "
                               "a_scale[m // rows_per_image]; give both or neither")
    if a_scale is not None:
        if isinstance(rows_per_image, bool) or not isinstance(rows_per_image, numbers.Integral) \
                or rows_per_image < 1:
            raise KernelInputError(f"rows_per_image must be a positive int, got {rows_per_image!r}")
        if M % rows_per_image:
            raise KernelInputError(f"rows_per_image={rows_per_image} does not divide M={M}: "
                                   "a must hold whole images")
        check_tensor("a_scale", a_scale, shape=(M // rows_per_image, K), dtypes=vector_dtypes, device=device)

    # Offsets are computed in int32 inside the kernel.
    for name, t in (("a", a), ("w", w), ("residual", residual), ("a_scale", a_scale)):
        if t is not None and max((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) >= 2**31:
            raise KernelInputError(f"{name} spans 2**31 elements or more; split the GEMM (int32 offsets)")
    if M * N >= 2**31:
        raise KernelInputError(f"the output [M, N] = [{M}, {N}] has 2**31 elements or more; split the GEMM")

    c = torch.empty((M, N), device=device, dtype=dtype)
    if M == 0 or N == 0:
        return c
    cfg = _config(dtype, N, a_scale is not None, activation)
    if config:
        unknown = set(config) - set(cfg)
        if unknown:
            raise KernelInputError(f"config keys {sorted(unknown)} are not among {sorted(cfg)}")
        cfg.update(config)
    row_blocks, norm_tiles = triton.cdiv(M, cfg["BLOCK_M"]), triton.cdiv(N, cfg["BLOCK_N"])
    stats = counters = None
    if layer_norm is not None:
        stats = torch.empty((2, norm_tiles, M), device=device, dtype=torch.float32)
        counters = _tile_counters(device, row_blocks)
    grid = (row_blocks * norm_tiles,)
    _gemm_epilogue_kernel[grid](
        a, w, c, a_scale, scale, shift, residual, norm_weight, norm_bias, stats, counters,
        M, N, K, rows_per_image if a_scale is not None else 1,
        a.stride(0), a.stride(1),
        w.stride(0), w.stride(1),
        c.stride(0),
        *(a_scale.stride() if a_scale is not None else (0, 0)),
        *(residual.stride() if residual is not None else (0, 0)),
        float(eps),
        ACTIVATION=activation,
        DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",
        NORM_TILES=norm_tiles if layer_norm is not None else 0,
        EVEN_N=layer_norm is not None and N % cfg["BLOCK_N"] == 0,
        **cfg,
    )
    return c


def gemm_reference(a, w, *, bias=None, scale=None, shift=None, activation=None, residual=None,
                   a_scale=None, rows_per_image=None, layer_norm=None):
    """The spec, in torch: what ``gemm`` computes, in float32 from the same inputs.

    Returns float32 (compare with the output dtype's tolerance). The roundings of the kernel it
    copies are those of the gate: ``a_scale`` is rounded to ``a``'s dtype and the gated
    ``A * a_scale`` too (the kernel multiplies in that dtype and feeds tensor cores in it, as
    torch's eager ``x * gate`` does in bfloat16), so the two differ only by summation order, the
    approximations of the activations (below 1e-6) and the final rounding of the output.
    """
    import torch
    import torch.nn.functional as F

    if w.ndim == 4:
        w = w[:, :, 0, 0]
    x = a.float()
    if a_scale is not None:
        image = torch.arange(a.shape[0], device=a.device) // rows_per_image  # [M]
        x = (x * a_scale.to(a.dtype).float()[image]).to(a.dtype).float()
    y = F.linear(x, w.float(), None if bias is None else bias.float())
    if scale is not None:
        y = y * scale.float()
    if shift is not None:
        y = y + shift.float()
    if activation == "gelu":
        y = F.gelu(y)
    elif activation == "gelu_tanh":
        y = F.gelu(y, approximate="tanh")
    elif activation == "silu":
        y = F.silu(y)
    if residual is not None:
        y = y + residual.float()
    if layer_norm is not None:
        weight, bias, eps = layer_norm
        y = F.layer_norm(y, y.shape[-1:], weight.float(), bias.float(), eps)
    return y
