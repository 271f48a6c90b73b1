"""Exercise 15: a masked row softmax, as a Triton kernel.

The softmax inside attention, on a GPU: one program per row, the whole row in registers, padded
keys masked out. The launcher is written; write the kernel's body, then check it from the
repository root (no GPU needed: without one the checker runs Triton's CPU interpreter):

    minialign exercise check 15

Read first: docs/kernels/writing-a-kernel.md and docs/kernels/attention.md, "What it computes";
tutorials/06_a_triton_kernel.py is a complete small kernel to copy the shape of.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def masked_softmax_kernel(
    x_ptr,  # [R, C] float32 scores, contiguous: row r starts at x_ptr + r * C
    mask_ptr,  # [R, C] int8, contiguous: 1 for a real key, 0 for padding
    out_ptr,  # [R, C] float32 output, contiguous
    C,  # columns (keys) per row
    BLOCK_C: tl.constexpr,  # a power of two >= C: a program holds a whole row
):
    """Program r computes row r:

        out[r, c] = exp(x[r, c] - m) / sum over real c' of exp(x[r, c'] - m)   where mask[r, c] == 1
        out[r, c] = 0                                                          where mask[r, c] == 0
        m = max over real c of x[r, c]           (every row has at least one real key)

    The program's lanes are tl.arange(0, BLOCK_C). Lanes c >= C lie past the row's end: load and
    store only under a mask (tl.load(..., mask=cols < C, other=...)), and give them, like padded
    keys, the score -inf, which counts for nothing in the max and nothing in the sum
    (exp(-inf - m) = 0).
    """
    raise NotImplementedError("exercise 15: write masked_softmax_kernel")


def masked_softmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [R, C] float32, [R, C] bool -> [R, C]
    """The launcher (given): checks the inputs, then one program per row."""
    if x.dim() != 2 or x.dtype != torch.float32 or mask.shape != x.shape or mask.dtype != torch.bool:
        raise ValueError(f"masked_softmax needs a [R, C] float32 x and a [R, C] bool mask, got x {x.dtype} "
                         f"{tuple(x.shape)} and mask {mask.dtype} {tuple(mask.shape)}")
    x = x.contiguous()
    R, C = x.shape
    out = torch.empty_like(x)
    masked_softmax_kernel[(R,)](x, mask.to(torch.int8).contiguous(), out, C, BLOCK_C=triton.next_power_of_2(C))
    return out
