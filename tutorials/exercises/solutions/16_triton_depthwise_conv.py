"""Exercise 16: a 3x3 depthwise convolution, as a Triton kernel.

Exercise 09's convolution on a GPU, channels-last: a program computes a tile of pixels times a
block of channels, looping over the nine taps, with the zero padding done by masked loads. The
launcher is written; write the kernel's body, then check it from the repository root (no GPU
needed: without one the checker runs Triton's CPU interpreter):

    minialign exercise check 16

Read first: docs/kernels/depthwise-conv.md ("What it computes", "How the work is tiled") and
kernels/depthwise_conv.py, the project's full kernel (batchnorm, SiLU, stride 2, 5x5 taps).
"""

import torch
import triton
import triton.language as tl

BLOCK_P = 16  # output pixels per program
BLOCK_C = 16  # channels per program


@triton.jit
def depthwise_conv3x3_kernel(
    x_ptr,  # [B, H, W, C] float32 input, contiguous: pixel (b, y, x) starts at ((b*H + y)*W + x) * C
    w_ptr,  # [3, 3, C] float32 taps, contiguous: w[i, j, c] = weight[c, 0, i, j] at w_ptr + (i*3 + j)*C + c
    out_ptr,  # [B, H, W, C] float32 output, contiguous like x
    H, W, C,  # image height, width, channels
    BLOCK_P: tl.constexpr,  # output pixels per program, consecutive in raster order over H*W
    BLOCK_C: tl.constexpr,  # channels per program
):
    """Program (pid_p, pid_c, b) computes the [BLOCK_P, BLOCK_C] tile of image b with pixels
    p = pid_p*BLOCK_P + tl.arange(0, BLOCK_P) (raster order: y = p // W, x = p % W) and channels
    c = pid_c*BLOCK_C + tl.arange(0, BLOCK_C):

        out[b, y, x, c] = sum over i, j < 3 of x[b, y + i - 1, x + j - 1, c] * w[i, j, c]

    stride 1 and one pixel of zero padding on every side: a tap outside the image reads 0 (a
    masked load with other=0.0), and so do pixels p >= H*W and channels c >= C of the last tiles,
    which must not be stored either. Accumulate in float32 (tl.zeros((BLOCK_P, BLOCK_C), ...)) and
    unroll the taps with tl.static_range(3).
    """
    b = tl.program_id(2)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P] output pixels
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C] channels
    y = p // W
    x = p % W
    pixel_in = p < H * W
    channel_in = c < C
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for i in tl.static_range(3):
        for j in tl.static_range(3):
            yy = y + i - 1  # the input row and column tap (i, j) reads
            xx = x + j - 1
            inside = pixel_in & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)  # [BLOCK_P]
            offsets = ((b * H + yy) * W + xx)[:, None] * C + c[None, :]  # [BLOCK_P, BLOCK_C]
            v = tl.load(x_ptr + offsets, mask=inside[:, None] & channel_in[None, :], other=0.0)
            w = tl.load(w_ptr + (i * 3 + j) * C + c, mask=channel_in, other=0.0)  # [BLOCK_C]
            acc += v * w[None, :]
    out_offsets = (b * H * W + p)[:, None] * C + c[None, :]
    tl.store(out_ptr + out_offsets, acc, mask=pixel_in[:, None] & channel_in[None, :])


def depthwise_conv3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # [B, H, W, C] float32, [C, 1, 3, 3] float32 -> [B, H, W, C]
    """The launcher (given): checks the inputs, lays the taps out [3, 3, C], launches one program
    per (pixel tile, channel block, image)."""
    if x.dim() != 4 or x.dtype != torch.float32 or weight.dtype != torch.float32 \
            or tuple(weight.shape) != (x.shape[-1], 1, 3, 3):
        raise ValueError(f"depthwise_conv3x3 needs a [B, H, W, C] float32 x and a [C, 1, 3, 3] float32 weight, got "
                         f"x {x.dtype} {tuple(x.shape)} and weight {weight.dtype} {tuple(weight.shape)}")
    x = x.contiguous()
    B, H, W, C = x.shape
    taps = weight[:, 0].permute(1, 2, 0).contiguous()  # [3, 3, C]
    out = torch.empty_like(x)
    grid = (triton.cdiv(H * W, BLOCK_P), triton.cdiv(C, BLOCK_C), B)
    depthwise_conv3x3_kernel[grid](x, taps, out, H, W, C, BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C)
    return out
