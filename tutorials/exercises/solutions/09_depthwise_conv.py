"""Exercise 09: a depthwise convolution, written with loops.

Every MBConv block of the vision tower filters each channel with its own k x k kernel. Write
``depthwise_conv2d`` below with plain Python loops (the point is the indices, not the speed),
then check it from the repository root:

    minialign exercise check 09

Read first: docs/kernels/depthwise-conv.md, "What it computes" (and docs/vision-tower.md,
"Padding and feature-map sizes").
"""

import numpy as np


def depthwise_conv2d(x: np.ndarray, weight: np.ndarray, stride: int, padding: tuple) -> np.ndarray:
    # [B, H, W, C], [C, 1, k, k], int, (top, bottom, left, right) -> [B, Ho, Wo, C]
    """Channel c of the output is channel c of the input filtered by weight[c, 0]:

        x_pad = x with padding[0] zero rows above, padding[1] below, padding[2] zero columns
                on the left and padding[3] on the right
        out[b, y, x, c] = sum over i, j < k of x_pad[b, y*stride + i, x*stride + j, c] * weight[c, 0, i, j]

    with Ho = (H + top + bottom - k) // stride + 1 and Wo = (W + left + right - k) // stride + 1.
    (No kernel flip: what deep learning calls a convolution is a cross-correlation.)
    """
    B, H, W, C = x.shape
    k = weight.shape[-1]
    top, bottom, left, right = padding
    x_pad = np.zeros((B, H + top + bottom, W + left + right, C), dtype=x.dtype)
    x_pad[:, top:top + H, left:left + W] = x
    Ho = (H + top + bottom - k) // stride + 1
    Wo = (W + left + right - k) // stride + 1
    out = np.zeros((B, Ho, Wo, C), dtype=x.dtype)
    for b in range(B):
        for y in range(Ho):
            for x_ in range(Wo):
                for c in range(C):
                    total = 0.0
                    for i in range(k):
                        for j in range(k):
                            total += x_pad[b, y * stride + i, x_ * stride + j, c] * weight[c, 0, i, j]
                    out[b, y, x_, c] = total
    return out
