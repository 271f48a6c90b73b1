"""Squeeze-excitation gate: the two tiny fully-connected layers, from per-channel pixel sums.

Math. Squeeze-excitation (Hu et al. 2018) reweights the channels of an image by a gate computed
from the whole image. The squeeze (the spatial mean) is not done here: the depthwise-conv kernel
already emits per-image per-channel pixel *sums*, so this kernel starts from them::

    m[c]  = sums[b, c] / hw                                  mean over the hw pixels   [C]
    h[s]  = silu(sum_c W_r[s, c] m[c] + b_r[s])              reduce FC + SiLU         [S]
    g[c]  = sigmoid(sum_s W_e[c, s] h[s] + b_e[c])           expand FC + sigmoid      [C]

and the caller applies ``out[b, y, x, c] = x[b, y, x, c] * g[b, c]``. ``W_r`` is the checkpoint's
1x1 conv weight ``[S, C, 1, 1]``, ``W_e`` ``[C, S, 1, 1]``; in align-base C goes up to 3840 and S
up to 160. The constants C and S are compile-time (one compiled kernel per (C, S) pair).

Tiling. One program per image ``b``; the work per image is two matrix-vector products,
2*C*S multiply-adds (1.2 M at C=3840, S=160), too little to be worth splitting an image across
programs and then combining partial sums. All of S fits in one block (``BLOCK_S`` =
next power of two >= S), so ``h`` stays in registers between the two FCs:

1. reduce FC: loop over C in blocks of ``BLOCK_C``; each step loads a ``[BLOCK_S, BLOCK_C]`` tile
   of ``W_r`` (rows contiguous along C) and the matching ``BLOCK_C`` means, and accumulates
   ``sum(W_r_tile * m[None, :], axis=1)`` into a float32 ``[BLOCK_S]`` vector.
2. ``h = silu(acc + b_r)``, with the padded lanes s >= S forced to 0 so they add nothing below.
3. expand FC: loop over C again; each step loads a ``[BLOCK_C, BLOCK_S]`` tile of ``W_e`` (rows
   contiguous along S), reduces ``sum(W_e_tile * h[None, :], axis=1)`` over all of S at once,
   adds ``b_e``, applies the sigmoid and stores ``BLOCK_C`` gates.

Both loops walk the weights along their contiguous axis, so the loads coalesce. The weights
(~4.9 MB in float32 at C=3840, S=160) are re-read by every image but stay in L2 after the first.

References: Hu, Shen & Sun, "Squeeze-and-Excitation Networks" (2018); Tan & Le, EfficientNet
(2019); ``minialign.backends.reference``: ``squeeze_excite`` (the NumPy reference); transformers
``AlignVisionSqueezeExciteLayer``.

Benchmark: ``benchmarks/batchnorm_silu.py``, with the batchnorm cases. It is in the repository,
not in the installed package, and checks the kernel's output before it times it::

    python benchmarks/batchnorm_silu.py --only se_gate --dry-run    # no GPU: checks only
    python benchmarks/batchnorm_silu.py --only se_gate --out benchmarks/results/se_gate_gpu.json
"""

from __future__ import annotations

import numbers

import triton
import triton.language as tl

from ._checks import KernelInputError, check_tensor

_WEIGHT_DTYPE_NAMES = ("float32", "bfloat16", "float16")
MAX_S = 512  # BLOCK_S holds all of S in registers (tiles of up to 16 x 512); align-base needs 160


@triton.jit
def _se_gate_kernel(
    sums_ptr,  # [B, C] float32 per-image per-channel pixel sums, contiguous (row stride C)
    w_r_ptr,  # [S, C] reduce weight (the [S, C, 1, 1] conv weight), contiguous (row stride C)
    b_r_ptr,  # [S] reduce bias
    w_e_ptr,  # [C, S] expand weight (the [C, S, 1, 1] conv weight), contiguous (row stride S)
    b_e_ptr,  # [C] expand bias
    gate_ptr,  # [B, C] float32 output gate, contiguous (row stride C)
    C: tl.constexpr,  # channels (constexpr: see below)
    S: tl.constexpr,  # squeezed channels
    hw,  # number of pixels (as a float): m = sums / hw
    BLOCK_C: tl.constexpr,  # channels per loop step
    BLOCK_S: tl.constexpr,  # >= S: the whole hidden vector h in one block
):
    # C and S are compile-time constants, so a kernel is compiled per (C, S) pair: align-base has
    # a handful of them. A runtime loop bound would do on the GPU, but Triton 3.6's interpreter
    # (our CI) cannot iterate `range(0, C, ...)` over a runtime scalar under NumPy 2.4.
    b = tl.program_id(0).to(tl.int64)  # this program's image
    s_idx = tl.arange(0, BLOCK_S)  # [BLOCK_S]
    s_mask = s_idx < S
    c_base = tl.arange(0, BLOCK_C)  # [BLOCK_C]

    # 1. reduce FC: acc[s] = sum_c W_r[s, c] * m[c]
    acc = tl.zeros((BLOCK_S,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c_idx = c0 + c_base
        c_mask = c_idx < C
        m = tl.load(sums_ptr + b * C + c_idx, mask=c_mask, other=0.0) / hw  # [BLOCK_C]
        w = tl.load(w_r_ptr + s_idx[:, None] * C + c_idx[None, :],
                    mask=s_mask[:, None] & c_mask[None, :], other=0.0).to(tl.float32)  # [BLOCK_S, BLOCK_C]
        acc += tl.sum(w * m[None, :], axis=1)

    # 2. h = silu(acc + b_r); the padded lanes are 0 (silu(0) = 0 too, but say it explicitly).
    z = acc + tl.load(b_r_ptr + s_idx, mask=s_mask, other=0.0).to(tl.float32)
    h = tl.where(s_mask, z / (1.0 + tl.exp(-z)), 0.0)  # [BLOCK_S]

    # 3. expand FC + sigmoid: g[c] = sigmoid(sum_s W_e[c, s] * h[s] + b_e[c]), BLOCK_C gates a step
    for c0 in range(0, C, BLOCK_C):
        c_idx = c0 + c_base
        c_mask = c_idx < C
        w = tl.load(w_e_ptr + c_idx[:, None] * S + s_idx[None, :],
                    mask=c_mask[:, None] & s_mask[None, :], other=0.0).to(tl.float32)  # [BLOCK_C, BLOCK_S]
        e = tl.sum(w * h[None, :], axis=1) + tl.load(b_e_ptr + c_idx, mask=c_mask, other=0.0).to(tl.float32)
        # 1 / (1 + exp(-e)): for e << 0, exp(-e) overflows to inf and the gate is 0, the limit.
        tl.store(gate_ptr + b * C + c_idx, 1.0 / (1.0 + tl.exp(-e)), mask=c_mask)


def _as_matrix(name: str, w, rows_name: str, cols_name: str):
    """Accept a 1x1 conv weight ``[R, K, 1, 1]`` (the checkpoint's layout) or a plain ``[R, K]``."""
    if w.ndim == 4 and tuple(w.shape[2:]) == (1, 1):
        return w.view(w.shape[0], w.shape[1])  # free: a contiguous [R, K, 1, 1] is a contiguous [R, K]
    if w.ndim == 2:
        return w
    raise KernelInputError(f"{name} must be a 1x1 conv weight [{rows_name}, {cols_name}, 1, 1] or a matrix "
                           f"[{rows_name}, {cols_name}], got shape {tuple(w.shape)}")


def se_gate(sums, hw: int, reduce_weight, reduce_bias, expand_weight, expand_bias):
    """Squeeze-excitation gate ``sigmoid(W_e silu(W_r (sums / hw) + b_r) + b_e)``, per image.

    Args:
        sums: ``[B, C]`` float32, contiguous: per-image per-channel sums over the pixels.
        hw: the number of pixels summed (H * W), a positive int.
        reduce_weight: ``[S, C, 1, 1]`` (or ``[S, C]``), contiguous; float32, bfloat16 or float16.
        reduce_bias: ``[S]``, contiguous, the weights' dtype.
        expand_weight: ``[C, S, 1, 1]`` (or ``[C, S]``), contiguous, the weights' dtype.
        expand_bias: ``[C]``, contiguous, the weights' dtype.

    Returns:
        The gate, ``[B, C]`` float32 with values in [0, 1]; the block's output is ``x * gate``.
    """
    import torch

    check_tensor("sums", sums, ndim=2, dtypes=(torch.float32,), contiguous=True)
    B, C = sums.shape
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

    gate = torch.empty((B, C), dtype=torch.float32, device=sums.device)
    if B == 0 or C == 0:
        return gate
    block_s = triton.next_power_of_2(S)
    # Weight tiles of 4096 elements (32 float32 registers per thread at 4 warps) but at least 16
    # channels wide (S > 256: 16 x BLOCK_S): S=160 -> BLOCK_S=256, BLOCK_C=16; S=8 -> BLOCK_C=512
    # (capped by C).
    block_c = min(max(16, 4096 // block_s), triton.next_power_of_2(C))
    _se_gate_kernel[(B,)](
        sums, w_r, reduce_bias, w_e, expand_bias, gate, C, S, float(hw),
        BLOCK_C=block_c, BLOCK_S=block_s, num_warps=4,
    )
    return gate
