"""Fused multi-head attention with a key padding mask, for the BERT text tower.

Math. For one (batch b, head h), with q, k, v rows of length D and the key padding mask
``real[b, j]`` (1 = a real token, 0 = padding)::

    s[i, j] = scale * q[i] . k[j]            if real[b, j]        (scale = 1/sqrt(D) by default)
            = float32 min (-3.4e38)           otherwise            (as attention_bias does)
    p[i, j] = exp(s[i, j] - max_j s[i, j]) / sum_j exp(s[i, j] - max_j s[i, j])   (float32)
    out[i]  = sum_j p[i, j] v[j]

This is ``attention(q, k, v, attention_bias(mask))`` of ``minialign.backends.reference`` exactly,
including its one odd case: a row whose keys are *all* padding has every score equal to float32
min, so its softmax is uniform over all T keys and its output is the mean of v (transformers'
eager attention does the same). Padded keys get the finite float32 min, not -inf: that is what
makes this case a uniform average instead of 0/0 = NaN. The positions of the last key block past
the end of the sequence (j >= T) are not keys at all and get -inf, i.e. weight exactly 0 in every
row.
The kernel works in base 2: ``exp(x) = exp2(x * log2(e))``, so it folds log2(e) into the scale
(one multiply per score) and calls exp2, the instruction the GPU has. The padding value stays
float32 min; exp2(min - m) is 0 for any real score m, exactly as exp(min - m) is.

Tiling. One program per (query block, batch * head): program (m, b * heads + h) computes
``out[b, m*BLOCK_M : (m+1)*BLOCK_M, h*D : (h+1)*D]``. It loads its ``[BLOCK_M, D]`` block of q once
and walks the keys in blocks of ``BLOCK_N`` rows of k and v; no ``[B, heads, T, T]`` tensor ever
exists in memory, only a ``[BLOCK_M, BLOCK_N]`` tile of scores in registers. Two paths:

* fast path, T <= 128 (captions): ``BLOCK_N`` >= T, so the whole sequence is one key
  block and the softmax is the plain one above: row max, exp2, row sum, one ``p @ v``.
* general path, 128 < T (up to BERT's 512 positions): online softmax (FlashAttention). The program
  keeps a running row max ``m``, a running row sum ``l`` of exp2(s - m) and an unnormalised output
  ``acc``; each key block that raises the max rescales both by ``alpha = exp2(m_old - m_new)``
  before adding its own ``exp2(s - m_new)`` terms. After the last block ``out = acc / l``.

Both matrix products (``q @ k^T`` and ``p @ v``) use ``tl.dot`` with float32 accumulation; in
bfloat16, p is rounded to bfloat16 for the second product (as FlashAttention does), the softmax
itself is float32 throughout. float32 inputs use IEEE float32 dots, not TF32, so the kernel matches
the float32 reference to ~1e-6.

Layout. q, k and v are ``[B, heads, T, D]`` with any strides, so the fused QKV projection is read
in place: ``qkv = x @ W_qkv.T`` is ``[B, T, 3 * heads * D]`` and
``qkv.view(B, T, 3, heads, D).permute(2, 0, 3, 1, 4)`` gives q, k, v as strided views (rows of
D contiguous elements, row stride 3 * heads * D), with no transpose copy. The output is written as
``[B, T, heads * D]``, contiguous: the heads already merged, the layout the output projection
(``context @ W_o.T``) reads, so no transpose copy there either.

References: Vaswani et al., "Attention Is All You Need" (2017); Milakov & Gimelshein, "Online
normalizer calculation for softmax" (2018); Dao et al., "FlashAttention" (2022); Triton tutorial
``06-fused-attention.py``; ``minialign.backends.reference``: ``attention``, ``attention_bias``
(the reference).

Benchmark: ``benchmarks/attention.py``. It is in the repository, not in the installed package,
and checks the kernel's output before it times it::

    python benchmarks/attention.py --dry-run    # no GPU: checks only
    python benchmarks/attention.py --out benchmarks/results/attention_gpu.json
"""

from __future__ import annotations

import math

import triton
import triton.language as tl

from ._checks import INTERPRETED, KernelInputError, check_tensor

_DTYPE_NAMES = ("float32", "bfloat16")
_MASK_DTYPE_NAMES = ("bool", "uint8", "int8", "int16", "int32", "int64")
HEAD_DIMS = (16, 32, 64, 128)  # powers of two: tl.arange needs one; tl.dot needs >= 16
FAST_PATH_MAX_T = 128  # T up to this: the whole sequence is one key block (no rescaling)
LOG2_E = 1.4426950408889634

FLOAT32_MIN: tl.constexpr = tl.constexpr(-3.4028234663852886e38)  # np.finfo(np.float32).min


@triton.jit
def _masked_scores(q, k_ptr, mask_ptr, start_n, T, stride_kt, stride_kd, stride_mt, qk_scale,
                   D: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Scores of this program's queries against keys start_n .. start_n + BLOCK_N, in log2 units.

    Returns ``[BLOCK_M, BLOCK_N]`` float32: ``scale * log2(e) * q . k`` for real keys, float32 min
    for padded keys, -inf past the end of the sequence.
    """
    offs_n = start_n + tl.arange(0, BLOCK_N)  # [BLOCK_N] key positions
    offs_d = tl.arange(0, D)  # [D]
    in_seq = offs_n < T
    k = tl.load(k_ptr + offs_n[:, None] * stride_kt + offs_d[None, :] * stride_kd,
                mask=in_seq[:, None], other=0.0)  # [BLOCK_N, D]
    real = tl.load(mask_ptr + offs_n * stride_mt, mask=in_seq, other=0) != 0  # [BLOCK_N]
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N] float32
    s = tl.where(real[None, :], s, FLOAT32_MIN)  # padding, exactly like attention_bias
    return tl.where(in_seq[None, :], s, float("-inf"))  # not a key at all


@triton.jit
def _load_values(v_ptr, start_n, T, stride_vt, stride_vd, D: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    return tl.load(v_ptr + offs_n[:, None] * stride_vt + offs_d[None, :] * stride_vd,
                   mask=(offs_n < T)[:, None], other=0.0)  # [BLOCK_N, D]


@triton.jit
def _attention_kernel(
    q_ptr,  # [B, heads, T, D] queries, any strides
    k_ptr,  # [B, heads, T, D] keys, any strides
    v_ptr,  # [B, heads, T, D] values, any strides
    mask_ptr,  # [B, T] key padding mask, any integer dtype (bool viewed as uint8); != 0 is a real token
    out_ptr,  # [B, T, heads * D] output, contiguous; head h owns columns h*D .. h*D + D
    stride_qb, stride_qh, stride_qt, stride_qd,  # q strides, in elements
    stride_kb, stride_kh, stride_kt, stride_kd,  # k strides
    stride_vb, stride_vh, stride_vt, stride_vd,  # v strides
    stride_mb, stride_mt,  # mask strides
    stride_ob, stride_ot,  # out strides (T * heads * D and heads * D)
    heads,  # number of heads
    T,  # sequence length (queries and keys)
    qk_scale,  # scale * log2(e): scores come out in log2 units, ready for exp2
    D: tl.constexpr,  # head dim, a power of two
    BLOCK_M: tl.constexpr,  # queries per program
    BLOCK_N: tl.constexpr,  # keys per step (>= T on the fast path)
    NUM_KEY_BLOCKS: tl.constexpr,  # cdiv(T, BLOCK_N); 1 = the fast path (plain softmax, no rescaling)
    DOT_PRECISION: tl.constexpr,  # "ieee" for float32 inputs (no TF32), "tf32" otherwise (ignored for bf16)
):
    pid_m = tl.program_id(0)  # query block
    pid_bh = tl.program_id(1)  # b * heads + h
    b = (pid_bh // heads).to(tl.int64)  # int64: b * stride_b can pass 2**31 at large batch
    h = (pid_bh % heads).to(tl.int64)
    q_ptr += b * stride_qb + h * stride_qh
    k_ptr += b * stride_kb + h * stride_kh
    v_ptr += b * stride_vb + h * stride_vh
    mask_ptr += b * stride_mb

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] query positions
    offs_d = tl.arange(0, D)  # [D]
    q = tl.load(q_ptr + offs_m[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                mask=(offs_m < T)[:, None], other=0.0)  # [BLOCK_M, D]

    if NUM_KEY_BLOCKS == 1:
        # Fast path: every key is in this one block; plain softmax, no rescaling.
        s = _masked_scores(q, k_ptr, mask_ptr, 0, T, stride_kt, stride_kd, stride_mt, qk_scale,
                           D, BLOCK_N, DOT_PRECISION)
        m = tl.max(s, 1)  # [BLOCK_M]; finite: every row has >= 1 in-sequence key (T >= 1)
        p = tl.exp2(s - m[:, None])  # [BLOCK_M, BLOCK_N] float32
        l_i = tl.sum(p, 1)  # [BLOCK_M]
        v = _load_values(v_ptr, 0, T, stride_vt, stride_vd, D, BLOCK_N)
        acc = tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)  # [BLOCK_M, D] float32
    else:
        # General path: online softmax over key blocks.
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max (log2 units)
        l_i = tl.zeros([BLOCK_M], tl.float32)  # running row sum of exp2(s - m_i)
        acc = tl.zeros([BLOCK_M, D], tl.float32)  # running sum of exp2(s - m_i) * v
        for block in range(NUM_KEY_BLOCKS):
            start_n = block * BLOCK_N
            s = _masked_scores(q, k_ptr, mask_ptr, start_n, T, stride_kt, stride_kd, stride_mt, qk_scale,
                               D, BLOCK_N, DOT_PRECISION)
            # Every block holds >= 1 in-sequence key, so m_new is finite (at worst float32 min) and
            # alpha = exp2(-inf - finite) = 0 on the first block: no inf - inf, no NaN.
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)  # [BLOCK_M] rescales what was summed under the old max
            p = tl.exp2(s - m_new[:, None])  # [BLOCK_M, BLOCK_N]
            l_i = l_i * alpha + tl.sum(p, 1)
            v = _load_values(v_ptr, start_n, T, stride_vt, stride_vd, D, BLOCK_N)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            m_i = m_new

    out = acc / l_i[:, None]  # l_i >= 1: the max term contributes exp2(0)
    o_ptrs = out_ptr + b * stride_ob + offs_m[:, None] * stride_ot + h * D + offs_d[None, :]
    tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=(offs_m < T)[:, None])


def attention(q, k, v, key_padding_mask, *, scale: float | None = None):
    """Multi-head attention ``softmax(scale * q k^T + padding bias) v``, heads merged in the output.

    Args:
        q: ``[B, heads, T, D]`` queries, float32 or bfloat16, any strides (e.g. a view of the fused
            QKV projection output). D must be 16, 32, 64 or 128.
        k: ``[B, heads, T, D]`` keys, same dtype and device as q, any strides.
        v: ``[B, heads, T, D]`` values, same dtype and device as q, any strides.
        key_padding_mask: ``[B, T]``, bool or integer, any strides: nonzero = a real token, 0 =
            padding (the tokenizer's ``attention_mask``). Padded keys get weight exactly 0; a row
            with no real key gets the uniform average of all T values (as reference.attention does).
        scale: multiplies the scores; default ``1 / sqrt(D)``.

    Returns:
        ``[B, T, heads * D]``, contiguous, q's dtype: output ``[b, t, h*D:(h+1)*D]`` is head h's
        attention output for query t (the layout the output projection reads).
    """
    import torch

    dtypes = tuple(getattr(torch, n) for n in _DTYPE_NAMES)
    check_tensor("q", q, ndim=4, dtypes=dtypes)
    if INTERPRETED and q.dtype != torch.float32:
        # The interpreter emulates the GPU with NumPy, which has no bfloat16: it returns garbage.
        raise KernelInputError(f"q has dtype {q.dtype}, but under TRITON_INTERPRET=1 kernels run in float32 only")
    B, heads, T, D = q.shape
    check_tensor("k", k, shape=(B, heads, T, D), dtypes=(q.dtype,), device=q.device)
    check_tensor("v", v, shape=(B, heads, T, D), dtypes=(q.dtype,), device=q.device)
    check_tensor("key_padding_mask", key_padding_mask, shape=(B, T),
                 dtypes=tuple(getattr(torch, n) for n in _MASK_DTYPE_NAMES), device=q.device)
    if D not in HEAD_DIMS:
        raise KernelInputError(f"head dim D={D} is unsupported: it must be one of {HEAD_DIMS} "
                               "(a power of two, >= 16 for tl.dot, <= 128 to fit in registers)")
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    if not math.isfinite(scale):
        raise KernelInputError(f"scale must be a finite number, got {scale!r}")

    out = torch.empty((B, T, heads * D), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    mask = key_padding_mask.view(torch.uint8) if key_padding_mask.dtype == torch.bool else key_padding_mask

    if T <= FAST_PATH_MAX_T:
        # One key block holding the whole sequence (>= 16: tl.dot's smallest tile); query blocks of
        # up to 64 rows, so T = 64 (BERT captions) is one program per (batch, head).
        block_n = max(16, triton.next_power_of_2(T))
        block_m = min(64, block_n)
    else:
        # 64 x 64 tiles: the scores s, p and the [64, D] accumulator stay in registers.
        block_m, block_n = 64, 64
    # The key-block count is a compile-time constant: the loop bound must be a Python int under
    # TRITON_INTERPRET=1 (Triton 3.6's interpreter cannot `range()` over a runtime int argument with
    # NumPy >= 2.4), and it costs little on the GPU: T in (128, 512] compiles at most 6 variants
    # (3..8 blocks of 64), and T itself stays a runtime argument for the tail masks.
    # 4 warps while the key/value tiles are <= 64 x 64 elements (the fast path at T <= 64 with
    # D <= 64, the general path at D <= 64); 8 for the bigger tiles (T up to 128 or D = 128), so the
    # float32 scores and accumulator (up to 64 x 128 each) don't spill out of registers.
    num_warps = 4 if block_n * D <= 64 * 64 else 8
    grid = (triton.cdiv(T, block_m), B * heads)
    _attention_kernel[grid](
        q, k, v, mask, out,
        *q.stride(), *k.stride(), *v.stride(), *mask.stride(), out.stride(0), out.stride(1),
        heads, T, scale * LOG2_E,
        D=D, BLOCK_M=block_m, BLOCK_N=block_n, NUM_KEY_BLOCKS=triton.cdiv(T, block_n),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=num_warps,
    )
    return out
