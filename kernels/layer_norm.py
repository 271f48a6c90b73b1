"""LayerNorm (+ residual) over the last axis, for the text tower.

Math. For each row ``v = x + residual`` (or just ``x``) of length H::

    mean = sum_i v[i] / H
    var  = sum_i (v[i] - mean)^2 / H          biased (population) variance, as torch
    y[i] = (v[i] - mean) / sqrt(var + eps) * weight[i] + bias[i]

BERT applies it after every attention and feed-forward block as ``LayerNorm(h + residual)``
with H = 768 and eps = 1e-12. Statistics are float32 whatever the input dtype, computed in two
passes over the row held in registers (mean first, then the mean of squared deviations), which
stays accurate when |mean| >> std where the one-pass ``E[v^2] - E[v]^2`` cancels.

Tiling. One program per row; the whole row fits in one block of ``BLOCK_H`` = next power of two
>= H lanes (masked beyond H; H <= 4096), so x, the residual, weight and bias are each read once
and y written once: bytes moved = read x (+ read residual) + write y (+ the weight and bias,
which stay in L2). Rows are independent, so there is nothing to synchronise.

References: Ba, Kiros & Hinton, "Layer Normalization" (2016); Triton tutorial 05-layer-norm
(the same one-row-per-program forward); llm.c ``dev/cuda/layernorm_forward.cu``;
``minialign.backends.reference``: ``layer_norm`` (the NumPy reference).

Benchmark: ``benchmarks/layer_norm.py``. It is in the repository, not in the installed package,
and checks the kernel's output before it times it::

    python benchmarks/layer_norm.py --dry-run    # no GPU: checks only
    python benchmarks/layer_norm.py --out benchmarks/results/layer_norm_gpu.json
"""

from __future__ import annotations

import numbers

import triton
import triton.language as tl

from ._checks import KernelInputError, check_tensor

_DTYPE_NAMES = ("float32", "bfloat16", "float16")
MAX_H = 4096  # the whole row lives in registers: 4096 float32 over 8 warps = 16 per thread


@triton.jit
def _layer_norm_kernel(
    x_ptr,  # [rows, H] input, contiguous (row stride H)
    res_ptr,  # [res_rows, H] residual, x's dtype, contiguous (unused unless HAS_RESIDUAL); row r of x
    #   adds residual row r % res_rows: res_rows = rows for a residual of x's shape, T for BERT's
    #   [T, H] position embeddings broadcast over the batch
    w_ptr,  # [H] weight (gamma)
    b_ptr,  # [H] bias (beta)
    y_ptr,  # [rows, H] output, x's dtype, contiguous (row stride H)
    H,  # row length: the normalised axis
    res_rows,  # rows of the residual (divides rows)
    eps,  # added to the variance
    BLOCK_H: tl.constexpr,  # next power of two >= H: one block holds a whole row
    HAS_RESIDUAL: tl.constexpr,  # True: normalise x + residual
):
    row = tl.program_id(0).to(tl.int64)  # int64: row * H may exceed 2**31
    cols = tl.arange(0, BLOCK_H)
    mask = cols < H
    offs = row * H + cols
    v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        v += tl.load(res_ptr + (row % res_rows) * H + cols, mask=mask, other=0.0).to(tl.float32)

    # Two passes over the row in registers; the masked lanes are 0 in v and are zeroed in the
    # deviations too, so neither sum sees them.
    mean = tl.sum(v, axis=0) / H
    centered = tl.where(mask, v - mean, 0.0)
    var = tl.sum(centered * centered, axis=0) / H
    rstd = 1.0 / tl.sqrt(var + eps)

    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = centered * rstd * w + b
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def layer_norm(x, weight, bias, eps: float, *, residual=None):
    """``LayerNorm(x + residual)`` (or ``LayerNorm(x)``) over the last axis.

    Args:
        x: ``[..., H]`` contiguous, float32, bfloat16 or float16; 1 <= H <= 4096.
        weight, bias: ``[H]`` contiguous, both float32 or both ``x``'s dtype.
        eps: added to the variance, >= 0 (BERT: 1e-12).
        residual: optional, ``x``'s dtype, contiguous, of ``x``'s shape or of its trailing axes
            (``[T, H]`` for ``x [B, T, H]``: broadcast over the leading ones, read in place, never
            copied); added to ``x`` in float32 before normalising (the sum is not rounded to
            ``x``'s dtype first).

    Returns:
        ``y``, ``x``'s shape and dtype.
    """
    import torch

    dtypes = tuple(getattr(torch, n) for n in _DTYPE_NAMES)
    check_tensor("x", x, dtypes=dtypes, contiguous=True)
    if x.ndim < 1:
        raise KernelInputError("x must have at least one dimension (the normalised one)")
    H = x.shape[-1]
    if not 1 <= H <= MAX_H:
        raise KernelInputError(f"the normalised size H={H} is unsupported (1 <= H <= {MAX_H}: a row must fit "
                               "in one block)")
    check_tensor("weight", weight, shape=(H,), dtypes=(torch.float32, x.dtype), device=x.device, contiguous=True)
    check_tensor("bias", bias, shape=(H,), dtypes=(weight.dtype,), device=x.device, contiguous=True)
    if residual is not None:
        check_tensor("residual", residual, dtypes=(x.dtype,), device=x.device, contiguous=True)
        if residual.ndim < 1 or tuple(residual.shape) != tuple(x.shape[x.ndim - residual.ndim:]):
            raise KernelInputError(f"residual must have x's shape {tuple(x.shape)} or its trailing axes "
                                   f"(broadcast over the leading ones), got {tuple(residual.shape)}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise KernelInputError(f"eps must be a real number >= 0, got {eps!r}")

    y = torch.empty_like(x)
    n_rows = x.numel() // H
    if n_rows == 0:
        return y
    block_h = triton.next_power_of_2(H)
    # Warps grow with the row (Triton tutorial 05's rule) so each thread holds 8-16 float32 values
    # of the row: H=768 -> BLOCK_H=1024 -> 4 warps; H=4096 -> 8 warps.
    num_warps = min(max(block_h // 256, 1), 8)
    _layer_norm_kernel[(n_rows,)](
        x, residual if residual is not None else x, weight, bias, y, H,
        n_rows if residual is None else max(1, residual.numel() // H), float(eps),
        BLOCK_H=block_h, HAS_RESIDUAL=residual is not None, num_warps=num_warps,
    )
    return y
