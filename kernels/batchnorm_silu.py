"""Eval-mode batchnorm + SiLU (or + residual add), elementwise on channels-last activations.

Math. In eval mode batchnorm is a per-channel affine map; fold it once into float32 ``scale`` and
``shift`` (``bn_scale_shift``)::

    scale[c] = weight[c] / sqrt(running_var[c] + eps)
    shift[c] = bias[c] - running_mean[c] * scale[c]
    z        = x[..., c] * scale[c] + shift[c]
    y        = silu(z) = z / (1 + exp(-z))        (activation="silu")
             = z                                   (activation=None)
    y        = y + residual                        (optional: MBConv's projection BN + skip)

Everything is computed in float32 and rounded to the output dtype once, at the store.

Tiling. A channels-last tensor ``[B, H, W, C]`` is a row-major matrix ``[rows = B*H*W, C]``.
Program ``(i, j)`` owns the tile ``rows [i*BLOCK_ROWS, (i+1)*BLOCK_ROWS) x channels
[j*BLOCK_C, (j+1)*BLOCK_C)``: it loads ``BLOCK_C`` values of ``scale``/``shift`` once and reuses
them for all ``BLOCK_ROWS`` rows, and each row of the tile is ``BLOCK_C`` contiguous elements,
so the loads coalesce. Every element is read once and written once: the kernel is bound by
memory bandwidth, and bytes moved = read x (+ read residual) + write y.

References: Ioffe & Szegedy 2015 (batchnorm); Elfwing et al. 2017 / Ramachandran et al. 2017
(SiLU/swish); ``minialign.backends.reference``: ``batch_norm`` and ``silu`` (the NumPy reference);
Triton tutorial 01-vector-add (masked elementwise kernels).

Benchmark: ``benchmarks/batchnorm_silu.py``. It is in the repository, not in the installed package,
and checks the kernel's output before it times it::

    python benchmarks/batchnorm_silu.py --dry-run    # no GPU: checks only
    python benchmarks/batchnorm_silu.py --out benchmarks/results/batchnorm_silu_gpu.json
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._checks import KernelInputError, check_tensor

ACTIVATIONS = ("silu", None)
# bfloat16 and float16 need a GPU: the interpreter emulates Triton with NumPy, which has no bfloat16.
# The torch import is deferred to the launcher so that importing this module stays cheap.
_DTYPE_NAMES = ("float32", "bfloat16", "float16")


@triton.jit
def _batchnorm_act_kernel(
    x_ptr,  # [rows, C] input, contiguous (row stride C), dtype float32/bfloat16/float16
    scale_ptr,  # [C] float32, folded weight / sqrt(var + eps)
    shift_ptr,  # [C] float32, folded bias - mean * scale
    res_ptr,  # [rows, C] residual, same dtype and layout as x (unused unless HAS_RESIDUAL)
    y_ptr,  # [rows, C] output, same dtype and layout as x (may alias x: each element is read before written)
    n_rows,  # number of rows = product of all dims but the last
    C,  # number of channels = the row length and row stride
    BLOCK_ROWS: tl.constexpr,  # rows per tile
    BLOCK_C: tl.constexpr,  # channels per tile (a power of two; the last tile is masked)
    APPLY_SILU: tl.constexpr,  # True: y = silu(z); False: y = z
    HAS_RESIDUAL: tl.constexpr,  # True: y += residual
):
    pid_rows = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = pid_rows * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)  # [BLOCK_ROWS]
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C]
    col_mask = cols < C
    # One load of the per-channel constants per tile, broadcast over its rows.
    scale = tl.load(scale_ptr + cols, mask=col_mask, other=0.0)
    shift = tl.load(shift_ptr + cols, mask=col_mask, other=0.0)

    # int64 row offsets: rows * C exceeds 2**31 for large activations (e.g. 64x145x145x640).
    offs = rows.to(tl.int64)[:, None] * C + cols[None, :]  # [BLOCK_ROWS, BLOCK_C]
    mask = (rows < n_rows)[:, None] & col_mask[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = x * scale[None, :] + shift[None, :]
    if APPLY_SILU:
        # z / (1 + exp(-z)): for z << 0, exp(-z) overflows to inf and y -> -0, the correct limit.
        y = y / (1.0 + tl.exp(-y))
    if HAS_RESIDUAL:
        y += tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def bn_scale_shift(weight, bias, running_mean, running_var, eps: float):
    """Fold eval-mode batchnorm parameters into a per-channel float32 ``(scale, shift)``.

    Args:
        weight, bias, running_mean, running_var: ``[C]`` tensors (any float dtype, any device),
            named like the checkpoint's ``BatchNorm2d`` entries.
        eps: the batchnorm's epsilon (added to the variance).

    Returns:
        ``(scale, shift)``, two contiguous float32 ``[C]`` tensors on ``weight``'s device, with
        ``batch_norm(x) == x * scale + shift``.
    """
    import torch

    w, b, m, v = (t.detach().to(torch.float32) for t in (weight, bias, running_mean, running_var))
    scale = w / torch.sqrt(v + eps)
    shift = b - m * scale
    return scale.contiguous(), shift.contiguous()


def _block_sizes(C: int) -> tuple[int, int]:
    # BLOCK_C: up to 128 channels (256 bytes of bfloat16) per row of the tile, enough for full
    # 32-byte memory sectors, small enough that C=384 is 3 unmasked tiles rather than one 512-wide
    # tile with a quarter of its lanes masked. BLOCK_ROWS: 4096 elements per tile, i.e. 32 per
    # thread at 4 warps -- enough bytes in flight per program for a bandwidth-bound kernel, few
    # enough registers to keep occupancy high.
    block_c = min(128, triton.next_power_of_2(C))
    return 4096 // block_c, block_c


def batchnorm_act(x, scale, shift, *, activation: str | None = "silu", residual=None, out=None):
    """``y = act(x * scale + shift) (+ residual)`` over the last (channel) axis of ``x``.

    Args:
        x: ``[..., C]`` contiguous channels-last activations (e.g. ``[B, H, W, C]``; an NCHW
            tensor in ``torch.channels_last`` memory format is this after ``.permute(0, 2, 3, 1)``),
            float32, bfloat16 or float16.
        scale, shift: ``[C]`` contiguous float32 tensors, from ``bn_scale_shift``.
        activation: ``"silu"`` or ``None`` (no activation).
        residual: optional tensor of ``x``'s shape and dtype, contiguous, added after the activation.
        out: optional output tensor of ``x``'s shape and dtype, contiguous; may be ``x`` itself.

    Returns:
        ``y``, ``x``'s shape and dtype (``out`` when given).
    """
    import torch

    dtypes = tuple(getattr(torch, n) for n in _DTYPE_NAMES)
    if activation not in ACTIVATIONS:
        raise KernelInputError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    check_tensor("x", x, dtypes=dtypes, contiguous=True)
    if x.ndim < 1:
        raise KernelInputError("x must have at least one dimension (the channels)")
    C = x.shape[-1]
    for name, t in (("scale", scale), ("shift", shift)):
        check_tensor(name, t, shape=(C,), dtypes=(torch.float32,), device=x.device, contiguous=True)
    for name, t in (("residual", residual), ("out", out)):
        if t is not None:
            check_tensor(name, t, shape=tuple(x.shape), dtypes=(x.dtype,), device=x.device, contiguous=True)
    if out is None:
        out = torch.empty_like(x)
    if x.numel() == 0:
        return out

    n_rows = x.numel() // C
    block_rows, block_c = _block_sizes(C)
    grid = (triton.cdiv(n_rows, block_rows), triton.cdiv(C, block_c))
    _batchnorm_act_kernel[grid](
        x, scale, shift, residual if residual is not None else x, out, n_rows, C,
        BLOCK_ROWS=block_rows, BLOCK_C=block_c,
        APPLY_SILU=activation == "silu", HAS_RESIDUAL=residual is not None,
        num_warps=4,
    )
    return out
