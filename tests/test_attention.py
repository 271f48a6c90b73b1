"""Fused attention kernel (kernels/attention.py) vs the reference op it replaces and torch; its
packed (varlen) layout vs its padded one; the launch grid against CUDA's limits.

``torch_attention`` below is the spec in torch; benchmarks/attention.py imports it, so the
benchmark's baseline and these tests agree on what "correct" is.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TOLERANCES, assert_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import seeds

from minialign.backends import reference
from minialign.kernels._checks import INTERPRETED, KernelInputError
from minialign.kernels import attention as attention_module
from minialign.kernels.attention import MAX_GRID_X, MAX_GRID_YZ, attention, attention_grid, attention_varlen

# Per-dtype tolerances, with the reason for each row.
ATTENTION_TOLERANCES = {
    # IEEE float32 dots (no TF32) and a float32 softmax: only the order of summation (and exp2
    # for exp) differs from torch and NumPy; measured errors are ~5e-7.
    torch.float32: TOLERANCES["float32"],
    # The references see the same bfloat16 q, k, v (upcast), so the scores agree to float32
    # rounding; the kernel then rounds p to bfloat16 for p @ v and the output to bfloat16, each
    # 2**-9 relative: ~4e-3 * |v|, with |v| ~ 1 here.
    torch.bfloat16: TOLERANCES["bfloat16"],
}


def torch_attention(q, k, v, key_padding_mask, scale=None):
    # [B, h, T, D], [B, h, T, D], [B, h, T, D], [B, T] -> [B, T, h * D]
    """softmax(scale * q k^T + bias) v with heads merged: the matmuls in the inputs' dtype, the
    softmax in float32, padded keys (mask == 0) at float32 min like ``reference.attention_bias``."""
    B, heads, T, D = q.shape
    scale = D ** -0.5 if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale  # [B, h, T, T]
    padded = (key_padding_mask == 0)[:, None, None, :]
    scores = scores.masked_fill(padded, torch.finfo(torch.float32).min)
    probs = scores.softmax(dim=-1)
    return torch.matmul(probs.to(v.dtype), v).transpose(1, 2).reshape(B, T, heads * D)


def numpy_attention(q, k, v, key_padding_mask):
    # the same, through minialign/backends/reference.py (float32 NumPy)
    B, heads, T, D = q.shape
    f = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
    out, _ = reference.attention(f(q), f(k), f(v), reference.attention_bias(key_padding_mask.cpu().numpy()))
    return torch.from_numpy(out).transpose(1, 2).reshape(B, T, heads * D)


def fused_qkv_views(qkv, heads):
    # [B, T, 3 * heads * D] -> three [B, heads, T, D] strided views (no copy)
    B, T, three_hidden = qkv.shape
    return qkv.view(B, T, 3, heads, three_hidden // (3 * heads)).permute(2, 0, 3, 1, 4)


def padding_mask(lengths, T, *, left=False, device="cpu"):
    # [B] -> [B, T] bool; real tokens first (the tokenizer's layout) or, with left=True, last
    pos = torch.arange(T, device=device)[None, :]
    lengths = torch.as_tensor(lengths, device=device)[:, None]
    return pos >= T - lengths if left else pos < lengths


def test_hand_computed(kernel_dtype, kernel_device):
    # k = 0 makes every score 0: the softmax is uniform over the real keys, so the output is the
    # mean of their values. v[t] = t (in every column); the padded key's value is huge, so any
    # weight on it would show. Row 0: keys 0, 1, 2 real -> (0 + 1 + 2) / 3 = 1. Row 1: all keys
    # padded -> uniform over all four keys (reference.attention's behaviour) -> (0+1+2+3) / 4 = 1.5.
    B, heads, T, D = 2, 1, 4, 16
    q = torch.randn(B, heads, T, D).to(kernel_dtype).to(kernel_device)
    k = torch.zeros(B, heads, T, D, dtype=kernel_dtype, device=kernel_device)
    v = torch.arange(T, dtype=torch.float32)[None, None, :, None].repeat(B, heads, 1, D)
    v[0, :, 3] = 1e6
    v = v.to(kernel_dtype).to(kernel_device)
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]], device=kernel_device)
    out = attention(q, k, v, mask).float().cpu()
    assert out.shape == (B, T, heads * D)
    assert torch.equal(out[0], torch.full((T, D), 1.0))  # exact: the padded key's weight is exactly 0
    assert torch.equal(out[1], torch.full((T, D), 1.5))  # uniform, not NaN


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(B=st.sampled_from([1, 2, 3]), heads=st.sampled_from([1, 2, 3]),
       T=st.sampled_from([1, 2, 7, 13, 64, 130]),  # 130 > 128: the multi-block online softmax, tail of 2
       D=st.sampled_from([16, 32]), layout=st.sampled_from(["contiguous", "fused_qkv"]),
       left=st.booleans(), seed=seeds, data=st.data())
def test_matches_references(B, heads, T, D, layout, left, seed, data, kernel_dtype, kernel_device):
    lengths = data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B), label="lengths")  # 0: all padding
    gen = torch.Generator().manual_seed(seed)
    if layout == "fused_qkv":
        qkv = torch.randn(B, T, 3 * heads * D, generator=gen).to(kernel_dtype).to(kernel_device)
        q, k, v = fused_qkv_views(qkv, heads)
    else:
        q, k, v = (torch.randn(B, heads, T, D, generator=gen).to(kernel_dtype).to(kernel_device) for _ in range(3))
    v = v + 1.0  # non-centred values: a missing normalisation shows
    mask = padding_mask(lengths, T, left=left, device=kernel_device)

    out = attention(q, k, v, mask)
    assert out.shape == (B, T, heads * D) and out.dtype == kernel_dtype and out.is_contiguous()
    tol = ATTENTION_TOLERANCES[kernel_dtype]
    qf, kf, vf = q.float(), k.float(), v.float()
    assert_close(out, torch_attention(qf, kf, vf, mask), **tol, name="vs torch masked softmax")
    assert_close(out, numpy_attention(qf, kf, vf, mask), **tol, name="vs reference.attention")
    # torch's SDPA with a boolean mask; its rows without any key are not comparable (NaN or 0).
    has_keys = torch.tensor(lengths, device=kernel_device) > 0
    if has_keys.any():
        sdpa = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask[:, None, None, :])
        sdpa = sdpa.transpose(1, 2).reshape(B, T, heads * D)
        assert_close(out[has_keys], sdpa[has_keys], **tol, name="vs F.scaled_dot_product_attention")


@pytest.mark.parametrize("T", [13, 130])  # one key block; three key blocks (online softmax)
def test_reads_fused_qkv_projection_in_place(T, kernel_dtype, kernel_device):
    # The text tower's use: one [3H, H] projection, its output read through strided views.
    B, heads, D = 2, 2, 32
    hidden = heads * D
    x = torch.randn(B, T, hidden).to(kernel_dtype).to(kernel_device)
    w_qkv = (torch.randn(3 * hidden, hidden) / hidden ** 0.5).to(kernel_dtype).to(kernel_device)
    qkv = x @ w_qkv.T  # [B, T, 3H]
    q, k, v = fused_qkv_views(qkv, heads)
    assert not q.is_contiguous() and q.stride() == (T * 3 * hidden, D, 3 * hidden, 1)
    mask = padding_mask([T, 5], T, device=kernel_device)
    out = attention(q, k, v, mask)
    assert_close(out, torch_attention(q.float(), k.float(), v.float(), mask), **ATTENTION_TOLERANCES[kernel_dtype])


@pytest.mark.parametrize("T", [7, 130])
def test_real_keys_only_in_the_last_block_and_fully_padded_rows(T, kernel_dtype, kernel_device):
    # Left padding with 2 real keys: at T=130 they sit in the last key block, after two blocks
    # of padding only, so the running max starts at float32 min and must be reset (alpha = 0).
    # Row 1 has no real key: uniform over all T keys, i.e. the mean of v.
    B, heads, D = 2, 2, 16
    q, k, v = (torch.randn(B, heads, T, D).to(kernel_dtype).to(kernel_device) for _ in range(3))
    mask = padding_mask([2, 0], T, left=True, device=kernel_device).to(torch.int32)
    out = attention(q, k, v, mask)
    tol = ATTENTION_TOLERANCES[kernel_dtype]
    assert not out.float().isnan().any()
    assert_close(out, torch_attention(q.float(), k.float(), v.float(), mask), **tol)
    mean_v = v[1].float().mean(dim=1)  # [heads, D]
    assert_close(out[1], mean_v.reshape(1, heads * D).expand(T, -1), **tol, name="fully padded row")


# BERT captions (one 64 x 64 block); the fast path's largest T (two query blocks, 8 warps);
# the general path's smallest T (three key blocks, the last holding one key).
@pytest.mark.parametrize("T, D", [(64, 32), (128, 128), (129, 64)])
def test_block_sizes(T, D, kernel_dtype, kernel_device):
    q, k, v = (torch.randn(1, 1, T, D).to(kernel_dtype).to(kernel_device) for _ in range(3))
    mask = padding_mask([T - 3], T, device=kernel_device)
    assert_close(attention(q, k, v, mask), torch_attention(q.float(), k.float(), v.float(), mask),
                 **ATTENTION_TOLERANCES[kernel_dtype])


def test_scale_int_mask_and_strided_mask(kernel_dtype, kernel_device):
    B, heads, T, D = 3, 2, 11, 16
    q, k, v = (torch.randn(B, heads, T, D).to(kernel_dtype).to(kernel_device) for _ in range(3))
    mask = padding_mask([11, 4, 1], T, device=kernel_device)
    strided = torch.zeros(B, 2 * T, dtype=torch.int64, device=kernel_device)
    strided[:, ::2] = mask  # an int64 mask with a column stride of 2
    out = attention(q, k, v, strided[:, ::2], scale=0.37)
    assert_close(out, torch_attention(q.float(), k.float(), v.float(), mask, scale=0.37),
                 **ATTENTION_TOLERANCES[kernel_dtype])


def test_empty_batch(kernel_device):
    q = torch.zeros(0, 2, 5, 16, device=kernel_device)
    out = attention(q, q, q, torch.ones(0, 5, dtype=torch.bool, device=kernel_device))
    assert out.shape == (0, 5, 32)


def _bad_inputs(device):
    def qkv(B=2, heads=2, T=5, D=16, dtype=torch.float32):
        return torch.zeros(B, heads, T, D, dtype=dtype, device=device)

    mask = torch.ones(2, 5, dtype=torch.bool, device=device)
    return {
        "D not a power of two": ((qkv(D=24), qkv(D=24), qkv(D=24), mask), "head dim D=24"),
        "D > 128": ((qkv(D=256), qkv(D=256), qkv(D=256), mask), "head dim D=256"),
        "D < 16": ((qkv(D=8), qkv(D=8), qkv(D=8), mask), "head dim D=8"),
        "k shape": ((qkv(), qkv(T=6), qkv(), mask), r"k must have shape \(2, 2, 5, 16\)"),
        "v heads": ((qkv(), qkv(), qkv(heads=3), mask), r"v must have shape"),
        "q not 4-D": ((torch.zeros(2, 5, 32, device=device), qkv(), qkv(), mask), "q must have 4 dimensions"),
        "mask shape": ((qkv(), qkv(), qkv(), mask[:, :4]), r"key_padding_mask must have shape \(2, 5\)"),
        "mask float": ((qkv(), qkv(), qkv(), mask.float()), "key_padding_mask must have dtype"),
        "dtype mismatch": ((qkv(), qkv(dtype=torch.float64), qkv(), mask), "k must have dtype"),
        "float64": ((qkv(dtype=torch.float64),) * 3 + (mask,), "q must have dtype"),
        "wrong device": ((qkv(), qkv(), qkv(), torch.ones(2, 5, dtype=torch.bool, device="meta")),
                         "key_padding_mask is on meta"),
        "not a tensor": ((qkv(), qkv(), np.zeros((2, 2, 5, 16), np.float32), mask), "v must be a torch.Tensor"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs("cpu")))
def test_bad_inputs(case, kernel_device):
    args, match = _bad_inputs(kernel_device)[case]
    with pytest.raises(KernelInputError, match=match):
        attention(*args)


def test_bad_scale(kernel_device):
    q = torch.zeros(1, 1, 4, 16, device=kernel_device)
    with pytest.raises(KernelInputError, match="scale must be a finite number"):
        attention(q, q, q, torch.ones(1, 4, dtype=torch.bool, device=kernel_device), scale=float("nan"))


@pytest.mark.skipif(not INTERPRETED, reason="only the interpreter lacks bfloat16")
def test_interpreter_rejects_bfloat16():
    q = torch.zeros(1, 1, 4, 16, dtype=torch.bfloat16)
    with pytest.raises(KernelInputError, match="float32 only"):
        attention(q, q, q, torch.ones(1, 4, dtype=torch.bool))


# ----------------------------------------------------------------------------------------------
# packed sequences (cu_seqlens) and the launch grid
# ----------------------------------------------------------------------------------------------


def pack(qkv, lengths, heads):
    """The real tokens of a right-padded fused QKV output [B, T, 3 * heads * D], packed: q, k, v as
    strided [total, heads, D] views of one [total, 3 * heads * D] array, and cu_seqlens."""
    B, T, three_hidden = qkv.shape
    real = padding_mask(lengths, T, device=qkv.device)
    packed = qkv[real]  # [total, 3 * heads * D], sequence 0's rows first
    q, k, v = packed.view(-1, 3, heads, three_hidden // (3 * heads)).unbind(1)
    cu_seqlens = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32, device=qkv.device)
    return q, k, v, cu_seqlens, real


def test_varlen_hand_computed(kernel_dtype, kernel_device):
    # k = 0: every score is 0, so each query averages the values of its own sequence only.
    # Sequence 0 is rows 0-2 (values 0, 1, 2 -> 1), sequence 1 is row 3 (value 100 -> 100).
    heads, D = 1, 16
    q = torch.randn(4, heads, D).to(kernel_dtype).to(kernel_device)
    k = torch.zeros(4, heads, D, dtype=kernel_dtype, device=kernel_device)
    v = torch.tensor([0.0, 1.0, 2.0, 100.0])[:, None, None].repeat(1, heads, D).to(kernel_dtype).to(kernel_device)
    cu_seqlens = torch.tensor([0, 3, 4], dtype=torch.int32, device=kernel_device)
    out = attention_varlen(q, k, v, cu_seqlens, 3).float().cpu()
    assert out.shape == (4, heads * D)
    assert torch.equal(out, torch.tensor([1.0, 1.0, 1.0, 100.0])[:, None].expand(4, D))


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(heads=st.sampled_from([1, 2, 3]), D=st.sampled_from([16, 32]),
       T=st.sampled_from([1, 5, 16, 64, 130]),  # 130 > 128: the online softmax, 3 key blocks
       seed=seeds, data=st.data())
def test_varlen_equals_the_padded_kernel(heads, D, T, seed, data, kernel_dtype, kernel_device):
    """Packed, every real token's output is the padded kernel's: lengths 1..T, one of them T (the
    longest sequence sets max_seqlen) and, with two or more sequences, one of length 1."""
    B = data.draw(st.integers(1, 4), label="B")
    lengths = data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B), label="lengths")
    lengths[0] = T
    if B > 1:
        lengths[-1] = 1
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, T, 3 * heads * D, generator=gen).to(kernel_dtype).to(kernel_device)
    padded = attention(*fused_qkv_views(qkv, heads), padding_mask(lengths, T, device=kernel_device))
    q, k, v, cu_seqlens, real = pack(qkv, lengths, heads)
    out = attention_varlen(q, k, v, cu_seqlens, max(lengths))
    assert out.shape == (sum(lengths), heads * D) and out.dtype == kernel_dtype and out.is_contiguous()
    # The same tiles and the same sums in the same order: equal, not merely close.
    assert_close(out, padded[real], atol=0, rtol=0, name="packed vs padded")
    qf, kf, vf = (t.float() for t in fused_qkv_views(qkv, heads))
    expected = torch_attention(qf, kf, vf, padding_mask(lengths, T, device=kernel_device))[real]
    assert_close(out, expected, **ATTENTION_TOLERANCES[kernel_dtype], name="packed vs torch")


def test_varlen_with_max_seqlen_above_the_longest_and_an_empty_sequence(kernel_dtype, kernel_device):
    # max_seqlen larger than any sequence (130: the multi-block path over sequences of 3 and 7,
    # trailing key blocks all past the end) and a sequence of length 0 in the middle (no query).
    heads, D = 2, 16
    q, k, v = (torch.randn(10, heads, D).to(kernel_dtype).to(kernel_device) for _ in range(3))
    cu_seqlens = torch.tensor([0, 3, 3, 10], dtype=torch.int32, device=kernel_device)
    out = attention_varlen(q, k, v, cu_seqlens, 130)
    tol = ATTENTION_TOLERANCES[kernel_dtype]
    for start, end in ((0, 3), (3, 10)):
        seq = lambda t: t[start:end].transpose(0, 1)[None].float()  # noqa: E731  [1, heads, L, D]
        ones = torch.ones(1, end - start, device=kernel_device)
        assert_close(out[start:end], torch_attention(seq(q), seq(k), seq(v), ones)[0], **tol)


def _bad_varlen_inputs(device):
    def qkv(total=5, heads=2, D=16, dtype=torch.float32):
        return torch.zeros(total, heads, D, dtype=dtype, device=device)

    cu = torch.tensor([0, 2, 5], dtype=torch.int32, device=device)
    return {
        "q not 3-D": ((qkv()[None], qkv()[None], qkv()[None], cu, 3), "q must have 3 dimensions"),
        "k shape": ((qkv(), qkv(total=6), qkv(), cu, 3), r"k must have shape \(5, 2, 16\)"),
        "D": ((qkv(D=24), qkv(D=24), qkv(D=24), cu, 3), "head dim D=24"),
        "cu_seqlens int64": ((qkv(), qkv(), qkv(), cu.long(), 3), "cu_seqlens must have dtype"),
        "cu_seqlens 2-D": ((qkv(), qkv(), qkv(), cu[None], 3), "cu_seqlens must have 1 dimensions"),
        "cu_seqlens empty": ((qkv(), qkv(), qkv(), cu[:0], 3), r"cu_seqlens must have B \+ 1 >= 1 entries"),
        "max_seqlen negative": ((qkv(), qkv(), qkv(), cu, -1), "max_seqlen must be an int >= 0"),
        "max_seqlen float": ((qkv(), qkv(), qkv(), cu, 3.0), "max_seqlen must be an int >= 0"),
        "cu_seqlens on meta": ((qkv(), qkv(), qkv(), cu.to("meta"), 3), "cu_seqlens is on meta"),
    }


@pytest.mark.parametrize("case", list(_bad_varlen_inputs("cpu")))
def test_varlen_bad_inputs(case, kernel_device):
    args, match = _bad_varlen_inputs(kernel_device)[case]
    with pytest.raises(KernelInputError, match=match):
        attention_varlen(*args)


def test_the_grid_fits_cuda_limits_at_any_batch():
    """(batch * heads) on axis 0 (2**31 - 1 allowed), query blocks on axis 1 (65535): B = 6000 at
    12 heads is 72,000 programs, past what axis 1 would take; B = 10**8 is still launchable; a
    grid past axis 0's limit is a clear error, not a failed launch."""
    for B, T in ((6000, 64), (10**6, 512), (10**8, 20)):
        (x, y, z), block_m, block_n = attention_grid(B, 12, T)
        assert x == B * 12 <= MAX_GRID_X and y == -(-T // block_m) <= MAX_GRID_YZ and z == 1
    assert attention_grid(256, 12, 64) == ((3072, 1, 1), 64, 64)  # captions: one program per (text, head)
    assert attention_grid(2, 12, 512)[0] == (24, 8, 1)  # BERT's longest: 8 query blocks of 64
    with pytest.raises(KernelInputError, match="more than CUDA's grid allows"):
        attention_grid(2**31 // 12 + 1, 12, 64)


@pytest.mark.parametrize("packed", [False, True])
def test_the_launchers_launch_the_grid_they_compute(packed, monkeypatch, kernel_device):
    """The grid each launcher hands the kernel is attention_grid's (so the limits above hold for it)."""
    grids = []
    kernel = attention_module._attention_kernel

    class Recorded:
        def __getitem__(self, grid):
            grids.append(tuple(grid))
            return kernel[grid]

    monkeypatch.setattr(attention_module, "_attention_kernel", Recorded())
    B, heads, T, D = 3, 2, 9, 16
    qkv = torch.randn(B, T, 3 * heads * D, device=kernel_device)
    if packed:
        q, k, v, cu_seqlens, _ = pack(qkv, [9, 2, 5], heads)
        attention_varlen(q, k, v, cu_seqlens, 9)
    else:
        attention(*fused_qkv_views(qkv, heads), padding_mask([9, 2, 5], T, device=kernel_device))
    assert grids == [attention_grid(B, heads, T)[0]] == [(6, 1, 1)]
