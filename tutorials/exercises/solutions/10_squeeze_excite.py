"""Exercise 10: squeeze-excitation.

Every MBConv block reweights its channels by a gate computed from the whole image. Write
``squeeze_excite`` below, then check it from the repository root:

    minialign exercise check 10

Read first: docs/vision-tower.md, "One MBConv block" (step 3).
"""

import numpy as np


def squeeze_excite(x: np.ndarray, w_reduce: np.ndarray, b_reduce: np.ndarray, w_expand: np.ndarray,
                   b_expand: np.ndarray) -> np.ndarray:
    # [B, H, W, C], [S, C, 1, 1], [S], [C, S, 1, 1], [C] -> [B, H, W, C]
    """Squeeze-and-excitation (Hu et al., 2018), with the 1x1 convolutions as matrices:

        s = mean over (y, x) of x[b, y, x, :]                  squeeze        [B, C]
        z = s W_r^T + b_r,   W_r = w_reduce[:, :, 0, 0]        [S, C]  ->     [B, S]
        g = sigmoid(silu(z) W_e^T + b_e),  W_e = w_expand[:, :, 0, 0]   ->   [B, C]
        out[b, y, x, c] = x[b, y, x, c] * g[b, c]

    silu(z) = z * sigmoid(z); sigmoid(a) = 1 / (1 + exp(-a)).
    """

    def sigmoid(a):
        return 1 / (1 + np.exp(-a))

    s = x.mean(axis=(1, 2))  # [B, C]
    z = s @ w_reduce[:, :, 0, 0].T + b_reduce  # [B, S]
    gate = sigmoid((z * sigmoid(z)) @ w_expand[:, :, 0, 0].T + b_expand)  # [B, C]
    return x * gate[:, None, None, :]
