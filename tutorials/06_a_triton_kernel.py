# %% [markdown]
# # 6. Writing a Triton kernel and checking it against the reference ops
#
# minialign's GPU backend runs hand-written Triton kernels (`kernels/`). This tutorial writes the
# smallest useful one -- bias + SiLU over channels-last activations, the epilogue of every
# convolution in the vision tower -- and checks it against the reference ops
# (`minialign/backends/reference.py`) the way `tests/` checks every kernel: on odd shapes, with a
# stated tolerance.
#
# It runs without a GPU: with `TRITON_INTERPRET=1`, set below when no CUDA device is present,
# Triton executes the kernel on the CPU (NumPy emulates the GPU; float32 only, slowly). It needs
# triton and torch (`pip install -e ".[dev]"`).

# %%
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
import numpy as np
import triton
import triton.language as tl

from minialign.backends import reference

device = "cuda" if torch.cuda.is_available() else "cpu"

# %% [markdown]
# The kernel. Each program handles `BLOCK_ROWS` rows (pixels) of the `[N, C]` activation and all
# of C: it loads a tile, adds the bias (broadcast over rows), applies SiLU in float32 and stores.
# Masks keep the loads and stores inside the array when N or C is not a multiple of the block.

# %%
@triton.jit
def bias_silu_kernel(
    x_ptr,  # [N, C] activation, contiguous (row stride C)
    bias_ptr,  # [C]
    out_ptr,  # [N, C] output, contiguous
    N,  # rows (pixels)
    C: tl.constexpr,  # channels
    BLOCK_ROWS: tl.constexpr,  # rows per program
    BLOCK_C: tl.constexpr,  # next power of two >= C
):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)  # [BLOCK_ROWS]
    cols = tl.arange(0, BLOCK_C)  # [BLOCK_C]
    inside = (rows[:, None] < N) & (cols[None, :] < C)  # [BLOCK_ROWS, BLOCK_C]
    offsets = rows[:, None] * C + cols[None, :]
    z = tl.load(x_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    z += tl.load(bias_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)[None, :]
    y = z / (1 + tl.exp(-z))  # SiLU
    tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=inside)


def bias_silu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The launcher: check what the kernel assumes, then one program per BLOCK_ROWS rows."""
    if not (x.is_contiguous() and x.shape[-1] == bias.shape[0] and x.device == bias.device):
        raise ValueError(f"need a contiguous [..., C] x and a [C] bias on its device; got {tuple(x.shape)}, "
                         f"{tuple(bias.shape)}")
    C = x.shape[-1]
    N = x.numel() // C
    out = torch.empty_like(x)
    BLOCK_ROWS = 16
    bias_silu_kernel[(triton.cdiv(N, BLOCK_ROWS),)](x, bias, out, N, C, BLOCK_ROWS, triton.next_power_of_2(C))
    return out


# %% [markdown]
# The check: odd sizes (so the masks matter), against the reference ops: `reference.silu(x + bias)`,
# SiLU written as x * sigmoid(x). Tolerance: float32 on both sides; the kernel divides by
# 1 + exp(-z) where the reference multiplies by its reciprocal, and exp may differ by an ulp or
# two between libraries, so 1e-6 relative (plus 1e-6 absolute near zero).

# %%
rng = np.random.default_rng(0)
for shape in [(1, 3, 5, 7), (2, 9, 4, 33), (1, 1, 1, 1)]:
    x = rng.standard_normal(shape).astype(np.float32) * 4
    bias = rng.standard_normal(shape[-1]).astype(np.float32)
    ours = bias_silu(torch.from_numpy(x).to(device), torch.from_numpy(bias).to(device)).cpu().numpy()
    expected = reference.silu(x + bias)
    error = float(np.abs(ours - expected).max())
    print(f"{str(shape):16} max abs error {error:.1e}")
    assert np.allclose(ours, expected, rtol=1e-6, atol=1e-6)

# %% [markdown]
# The real kernels in `kernels/` follow the same pattern at full size: a docstring with the math
# and the tiling, a comment per pointer giving its shape, a launcher that checks its inputs and
# raises a clear error, and tests against torch and the reference ops (`tests/test_*.py`).
