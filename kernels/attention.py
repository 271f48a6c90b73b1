"""Fused multi-head attention for the BERT text tower: padded batches (a key padding mask) and
packed ones (FlashAttention's ``cu_seqlens``).

Math. For one sequence and one head, with q, k, v rows of length D and ``real[j]`` saying whether
key j is a token (1) or padding (0)::

    s[i, j] = scale * q[i] . k[j]            if real[j]        (scale = 1/sqrt(D) by default)
            = float32 min (-3.4e38)           otherwise            (as attention_bias does)
    p[i, j] = exp(s[i, j] - max_j s[i, j]) / sum_j exp(s[i, j] - max_j s[i, j])   (float32)
    out[i]  = sum_j p[i, j] v[j]

Two layouts of the same math:

* padded (``attention``): q, k, v ``[B, heads, T, D]`` and the key padding mask ``[B, T]``. This is
  ``attention(q, k, v, attention_bias(mask))`` of ``minialign.backends.reference`` exactly,
  including its one odd case: a row whose keys are *all* padding has every score equal to float32
  min, so its softmax is uniform over all T keys and its output is the mean of v (transformers'
  eager attention does the same). Padded keys get the finite float32 min, not -inf: that is what
  makes this case a uniform average instead of 0/0 = NaN.
* packed (``attention_varlen``): the real tokens only, sequences one after another, q, k, v
  ``[total_tokens, heads, D]`` and ``cu_seqlens [B + 1]`` (int32): sequence b is rows
  ``cu_seqlens[b] .. cu_seqlens[b + 1]``, and its queries attend to its own keys, all real. No pad
  token is stored or computed; the result at a real token is the padded layout's (a padded key
  gets weight exactly 0 there). This is FlashAttention's "varlen" convention, ``max_seqlen`` the
  longest sequence.

The positions of the last key block past the end of the sequence (j >= its length) are not keys
at all and get -inf, i.e. weight exactly 0 in every row.
The kernel works in base 2: ``exp(x) = exp2(x * log2(e))``, so it folds log2(e) into the scale
(one multiply per score) and calls exp2, the instruction the GPU has. The padding value stays
float32 min; exp2(min - m) is 0 for any real score m, exactly as exp(min - m) is.

Tiling. One program per (batch * head, query block): program (b * heads + h, m) computes rows
``m*BLOCK_M .. (m+1)*BLOCK_M`` of head h of sequence b. The (batch, head) pairs are on the grid's
first axis, which CUDA allows 2**31 - 1 programs, and the query blocks on the second, which it
allows 65535 (``attention_grid``): a batch of any size launches. A program loads its
``[BLOCK_M, D]`` block of q once and walks the keys in blocks of ``BLOCK_N`` rows of k and v; no
``[B, heads, T, T]`` tensor ever exists in memory, only a ``[BLOCK_M, BLOCK_N]`` tile of scores in
registers. Two paths, chosen from T (padded) or max_seqlen (packed):

* fast path, T <= 128 (captions): ``BLOCK_N`` >= T, so the whole sequence is one key
  block and the softmax is the plain one above: row max, exp2, row sum, one ``p @ v``.
* general path, 128 < T (up to BERT's 512 positions): online softmax (FlashAttention). The program
  keeps a running row max ``m``, a running row sum ``l`` of exp2(s - m) and an unnormalised output
  ``acc``; each key block that raises the max rescales both by ``alpha = exp2(m_old - m_new)``
  before adding its own ``exp2(s - m_new)`` terms. After the last block ``out = acc / l``.

Packed, a program's sequence length comes from ``cu_seqlens``; query blocks past it (a sequence
shorter than max_seqlen) store nothing, and key blocks past it are all -inf and add nothing.

Both matrix products (``q @ k^T`` and ``p @ v``) use ``tl.dot`` with float32 accumulation; in
bfloat16, p is rounded to bfloat16 for the second product (as FlashAttention does), the softmax
itself is float32 throughout. float32 inputs use IEEE float32 dots, not TF32, so the kernel matches
the float32 reference to ~1e-6.

Layout. q, k and v have any strides, so the fused QKV projection is read in place: padded,
``qkv = x @ W_qkv.T`` is ``[B, T, 3 * heads * D]`` and
``qkv.view(B, T, 3, heads, D).permute(2, 0, 3, 1, 4)`` gives q, k, v as strided views (rows of
D contiguous elements, row stride 3 * heads * D), with no transpose copy; packed,
``qkv.view(total, 3, heads, D).unbind(1)`` does the same. The output is written with the heads
already merged, ``[B, T, heads * D]`` or ``[total, heads * D]``, contiguous: the layout the output
projection (``context @ W_o.T``) reads, so no transpose copy there either.

References: Vaswani et al., "Attention Is All You Need" (2017); Milakov & Gimelshein, "Online
normalizer calculation for softmax" (2018); Dao et al., "FlashAttention" (2022) and its
``flash_attn_varlen_func``; Triton tutorial ``06-fused-attention.py``;
``minialign.backends.reference``: ``attention``, ``attention_bias``, ``packed_attention`` (the
reference).

Benchmark: ``benchmarks/attention.py``. It is in the repository, not in the installed package,
and checks the kernel's output before it times it::

    python benchmarks/attention.py --dry-run    # no GPU: checks only
    python benchmarks/attention.py --out benchmarks/results/attention_gpu.json
"""

from __future__ import annotations

import math
import numbers

import triton
import triton.language as tl

from ._checks import INTERPRETED, KernelInputError, check_tensor

_DTYPE_NAMES = ("float32", "bfloat16")
_MASK_DTYPE_NAMES = ("bool", "uint8", "int8", "int16", "int32", "int64")
HEAD_DIMS = (16, 32, 64, 128)  # powers of two: tl.arange needs one; tl.dot needs >= 16
FAST_PATH_MAX_T = 128  # T up to this: the whole sequence is one key block (no rescaling)
LOG2_E = 1.4426950408889634
# CUDA's grid limits: 2**31 - 1 blocks along x, 65535 along y and z.
MAX_GRID_X, MAX_GRID_YZ = 2**31 - 1, 65535

FLOAT32_MIN: tl.constexpr = tl.constexpr(-3.4028234663852886e38)  # np.finfo(np.float32).min


@triton.jit
def _scores(q, k_ptr, mask_ptr, start_n, n_keys, stride_kt, stride_kd, stride_mt, qk_scale,
            D: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Scores of this program's queries against keys start_n .. start_n + BLOCK_N, in log2 units.

    Returns ``[BLOCK_M, BLOCK_N]`` float32: ``scale * log2(e) * q . k`` for real keys, float32 min
    for padded keys (only with a mask), -inf past the end of the sequence (key >= n_keys).
    """
    offs_n = start_n + tl.arange(0, BLOCK_N)  # [BLOCK_N] key positions in the sequence
    offs_d = tl.arange(0, D)  # [D]
    in_seq = offs_n < n_keys
    k = tl.load(k_ptr + offs_n[:, None] * stride_kt + offs_d[None, :] * stride_kd,
                mask=in_seq[:, None], other=0.0)  # [BLOCK_N, D]
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N] float32
    if mask_ptr is not None:  # padded layout; packed sequences hold real tokens only
        real = tl.load(mask_ptr + offs_n * stride_mt, mask=in_seq, other=0) != 0  # [BLOCK_N]
        s = tl.where(real[None, :], s, FLOAT32_MIN)  # padding, exactly like attention_bias
    return tl.where(in_seq[None, :], s, float("-inf"))  # not a key at all


@triton.jit
def _load_values(v_ptr, start_n, n_keys, stride_vt, stride_vd, D: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    return tl.load(v_ptr + offs_n[:, None] * stride_vt + offs_d[None, :] * stride_vd,
                   mask=(offs_n < n_keys)[:, None], other=0.0)  # [BLOCK_N, D]


@triton.jit
def _attention_kernel(
    q_ptr,  # [B, heads, T, D] (padded) or [total, heads, D] (packed) queries, any strides
    k_ptr,  # keys, q's shape, any strides
    v_ptr,  # values, q's shape, any strides
    mask_ptr,  # padded: [B, T] key padding mask, any integer dtype (bool viewed as uint8), != 0 is a
    #   real token; packed: None
    cu_seqlens_ptr,  # packed: [B + 1] int32, sequence b is rows cu_seqlens[b] .. cu_seqlens[b + 1]; padded: None
    out_ptr,  # [B, T, heads * D] or [total, heads * D] output, contiguous; head h owns columns h*D .. h*D + D
    stride_qb, stride_qh, stride_qt, stride_qd,  # q strides, in elements (stride_qb unused when packed)
    stride_kb, stride_kh, stride_kt, stride_kd,  # k strides
    stride_vb, stride_vh, stride_vt, stride_vd,  # v strides
    stride_mb, stride_mt,  # mask strides (unused when packed)
    stride_ob, stride_ot,  # out strides: T * heads * D (0 when packed) and heads * D
    heads,  # number of heads
    T,  # padded: the sequence length (queries and keys); packed: unused (from cu_seqlens)
    qk_scale,  # scale * log2(e): scores come out in log2 units, ready for exp2
    D: tl.constexpr,  # head dim, a power of two
    BLOCK_M: tl.constexpr,  # queries per program
    BLOCK_N: tl.constexpr,  # keys per step (>= T, or max_seqlen, on the fast path)
    NUM_KEY_BLOCKS: tl.constexpr,  # cdiv(T or max_seqlen, BLOCK_N); 1 = the fast path (plain softmax)
    DOT_PRECISION: tl.constexpr,  # "ieee" for float32 inputs (no TF32), "tf32" otherwise (ignored for bf16)
):
    pid_bh = tl.program_id(0)  # b * heads + h: axis 0 allows 2**31 - 1 programs
    pid_m = tl.program_id(1)  # query block: axis 1 allows 65535
    b = (pid_bh // heads).to(tl.int64)  # int64: b * stride_b can pass 2**31 at large batch
    h = (pid_bh % heads).to(tl.int64)
    if cu_seqlens_ptr is not None:
        # Packed: this sequence's rows start at cu_seqlens[b]; its length bounds queries and keys.
        start = tl.load(cu_seqlens_ptr + b).to(tl.int64)
        n = (tl.load(cu_seqlens_ptr + b + 1) - start).to(tl.int32)
        row0 = start  # first row of this sequence in q, k, v and out
    else:
        n = T
        row0 = 0
        mask_ptr += b * stride_mb
    q_ptr += b * stride_qb + h * stride_qh + row0 * stride_qt  # stride_qb is 0 when packed
    k_ptr += b * stride_kb + h * stride_kh + row0 * stride_kt
    v_ptr += b * stride_vb + h * stride_vh + row0 * stride_vt

    if pid_m * BLOCK_M >= n:
        return  # packed: a sequence shorter than max_seqlen has no query in this block
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] query positions in the sequence
    offs_d = tl.arange(0, D)  # [D]
    q = tl.load(q_ptr + offs_m[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                mask=(offs_m < n)[:, None], other=0.0)  # [BLOCK_M, D]

    if NUM_KEY_BLOCKS == 1:
        # Fast path: every key is in this one block; plain softmax, no rescaling.
        s = _scores(q, k_ptr, mask_ptr, 0, n, stride_kt, stride_kd, stride_mt, qk_scale, D, BLOCK_N, DOT_PRECISION)
        m = tl.max(s, 1)  # [BLOCK_M]; finite: every row has >= 1 in-sequence key (n >= 1)
        p = tl.exp2(s - m[:, None])  # [BLOCK_M, BLOCK_N] float32
        l_i = tl.sum(p, 1)  # [BLOCK_M]
        v = _load_values(v_ptr, 0, n, stride_vt, stride_vd, D, BLOCK_N)
        acc = tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)  # [BLOCK_M, D] float32
    else:
        # General path: online softmax over key blocks.
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max (log2 units)
        l_i = tl.zeros([BLOCK_M], tl.float32)  # running row sum of exp2(s - m_i)
        acc = tl.zeros([BLOCK_M, D], tl.float32)  # running sum of exp2(s - m_i) * v
        for block in range(NUM_KEY_BLOCKS):
            start_n = block * BLOCK_N
            s = _scores(q, k_ptr, mask_ptr, start_n, n, stride_kt, stride_kd, stride_mt, qk_scale,
                        D, BLOCK_N, DOT_PRECISION)
            # The first block holds >= 1 in-sequence key, so m_new is finite from then on (at worst
            # float32 min) and alpha = exp2(-inf - finite) = 0 on the first block: no inf - inf.
            # A packed sequence shorter than max_seqlen has blocks of -inf only at the end: there
            # m_new = m_i, alpha = 1 and p = 0, so they add nothing.
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)  # [BLOCK_M] rescales what was summed under the old max
            p = tl.exp2(s - m_new[:, None])  # [BLOCK_M, BLOCK_N]
            l_i = l_i * alpha + tl.sum(p, 1)
            v = _load_values(v_ptr, start_n, n, stride_vt, stride_vd, D, BLOCK_N)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            m_i = m_new

    out = acc / l_i[:, None]  # l_i >= 1: the max term contributes exp2(0)
    o_ptrs = out_ptr + b * stride_ob + (row0 + offs_m[:, None]) * stride_ot + h * D + offs_d[None, :]
    tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=(offs_m < n)[:, None])


def attention_grid(batch: int, heads: int, max_len: int) -> tuple[int, int, int]:
    """The launch grid and the tiles for ``batch`` sequences of up to ``max_len`` tokens:
    ``((batch * heads, query blocks, 1), BLOCK_M, BLOCK_N)``.

    The (batch, head) pairs go on axis 0, which CUDA allows 2**31 - 1 programs; the query blocks
    (at most 8 for BERT's 512 positions) on axis 1, which it allows 65535. A grid beyond either
    limit is a KernelInputError, never a failed launch.
    """
    if max_len <= FAST_PATH_MAX_T:
        # One key block holding the whole sequence (>= 16: tl.dot's smallest tile); query blocks of
        # up to 64 rows, so T = 64 (BERT captions) is one program per (batch, head).
        block_n = max(16, triton.next_power_of_2(max_len))
        block_m = min(64, block_n)
    else:
        # 64 x 64 tiles: the scores s, p and the [64, D] accumulator stay in registers.
        block_m, block_n = 64, 64
    grid = (batch * heads, triton.cdiv(max_len, block_m), 1)
    if grid[0] > MAX_GRID_X:
        raise KernelInputError(f"batch * heads = {batch} * {heads} = {grid[0]} programs is more than CUDA's grid "
                               f"allows ({MAX_GRID_X}); split the batch")
    if grid[1] > MAX_GRID_YZ:
        raise KernelInputError(f"a sequence of {max_len} tokens is {grid[1]} query blocks of {block_m}, more than "
                               f"CUDA's grid allows ({MAX_GRID_YZ})")
    return grid, block_m, block_n


def _check_qkv(q, k, v, ndim: int):
    """The checks q, k and v share: dtype, shape, device, head dim."""
    import torch

    dtypes = tuple(getattr(torch, n) for n in _DTYPE_NAMES)
    check_tensor("q", q, ndim=ndim, dtypes=dtypes)
    if INTERPRETED and q.dtype != torch.float32:
        # The interpreter emulates the GPU with NumPy, which has no bfloat16: it returns garbage.
        raise KernelInputError(f"q has dtype {q.dtype}, but under TRITON_INTERPRET=1 kernels run in float32 only")
    check_tensor("k", k, shape=tuple(q.shape), dtypes=(q.dtype,), device=q.device)
    check_tensor("v", v, shape=tuple(q.shape), dtypes=(q.dtype,), device=q.device)
    D = q.shape[-1]
    if D not in HEAD_DIMS:
        raise KernelInputError(f"head dim D={D} is unsupported: it must be one of {HEAD_DIMS} "
                               "(a power of two, >= 16 for tl.dot, <= 128 to fit in registers)")


def _scale(scale, D: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(D)
    if not math.isfinite(scale):
        raise KernelInputError(f"scale must be a finite number, got {scale!r}")
    return scale


def _num_warps(block_n: int, D: int) -> int:
    # 4 warps while the key/value tiles are <= 64 x 64 elements (the fast path at T <= 64 with
    # D <= 64, the general path at D <= 64); 8 for the bigger tiles (T up to 128 or D = 128), so the
    # float32 scores and accumulator (up to 64 x 128 each) don't spill out of registers.
    return 4 if block_n * D <= 64 * 64 else 8


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

    _check_qkv(q, k, v, 4)
    B, heads, T, D = q.shape
    check_tensor("key_padding_mask", key_padding_mask, shape=(B, T),
                 dtypes=tuple(getattr(torch, n) for n in _MASK_DTYPE_NAMES), device=q.device)
    scale = _scale(scale, D)

    out = torch.empty((B, T, heads * D), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    grid, block_m, block_n = attention_grid(B, heads, T)
    mask = key_padding_mask.view(torch.uint8) if key_padding_mask.dtype == torch.bool else key_padding_mask
    # The key-block count is a compile-time constant: the loop bound must be a Python int under
    # TRITON_INTERPRET=1 (Triton 3.6's interpreter cannot `range()` over a runtime int argument with
    # NumPy >= 2.4), and it costs little on the GPU: T in (128, 512] compiles at most 6 variants
    # (3..8 blocks of 64), and T itself stays a runtime argument for the tail masks.
    _attention_kernel[grid](
        q, k, v, mask, None, out,
        *q.stride(), *k.stride(), *v.stride(), *mask.stride(), out.stride(0), out.stride(1),
        heads, T, scale * LOG2_E,
        D=D, BLOCK_M=block_m, BLOCK_N=block_n, NUM_KEY_BLOCKS=triton.cdiv(T, block_n),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=_num_warps(block_n, D),
    )
    return out


def attention_varlen(q, k, v, cu_seqlens, max_seqlen: int, *, scale: float | None = None):
    """Attention over packed sequences (no padding), FlashAttention's varlen convention.

    Args:
        q: ``[total, heads, D]`` queries of every sequence's real tokens, one sequence after
            another; float32 or bfloat16, any strides (e.g. a view of the fused QKV projection
            output ``[total, 3 * heads * D]``). D must be 16, 32, 64 or 128.
        k, v: ``[total, heads, D]``, same dtype and device as q, any strides.
        cu_seqlens: ``[B + 1]`` int32, contiguous, on q's device: ``cu_seqlens[0] = 0``,
            non-decreasing, ``cu_seqlens[B] = total``; sequence b is rows
            ``cu_seqlens[b] .. cu_seqlens[b + 1]`` and attends to itself only.
        max_seqlen: the longest sequence, ``max(cu_seqlens[1:] - cu_seqlens[:-1])`` (or more).
            The values of cu_seqlens are not read on the host -- that would stop the GPU once per
            layer --, so they must hold as stated: the model builds them from the attention mask.
        scale: multiplies the scores; default ``1 / sqrt(D)``.

    Returns:
        ``[total, heads * D]``, contiguous, q's dtype: row t, columns ``h*D:(h+1)*D`` is head h's
        output for token t. Equal, at every real token, to ``attention`` on the padded batch.
    """
    import torch

    _check_qkv(q, k, v, 3)
    total, heads, D = q.shape
    check_tensor("cu_seqlens", cu_seqlens, ndim=1, dtypes=(torch.int32,), device=q.device, contiguous=True)
    if cu_seqlens.shape[0] < 1:
        raise KernelInputError("cu_seqlens must have B + 1 >= 1 entries (it starts with 0)")
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, numbers.Integral) or max_seqlen < 0:
        raise KernelInputError(f"max_seqlen must be an int >= 0, got {max_seqlen!r}")
    scale = _scale(scale, D)

    out = torch.empty((total, heads * D), dtype=q.dtype, device=q.device)
    B = cu_seqlens.shape[0] - 1
    if out.numel() == 0 or B == 0 or max_seqlen == 0:
        return out
    grid, block_m, block_n = attention_grid(B, heads, max_seqlen)
    def strides(t):  # [total, heads, D] -> the kernel's (batch, head, token, d) strides; no batch axis
        return 0, t.stride(1), t.stride(0), t.stride(2)

    _attention_kernel[grid](
        q, k, v, None, cu_seqlens, out,
        *strides(q), *strides(k), *strides(v), 0, 0, 0, out.stride(0),
        heads, 0, scale * LOG2_E,
        D=D, BLOCK_M=block_m, BLOCK_N=block_n, NUM_KEY_BLOCKS=triton.cdiv(max_seqlen, block_n),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=_num_warps(block_n, D),
    )
    return out
