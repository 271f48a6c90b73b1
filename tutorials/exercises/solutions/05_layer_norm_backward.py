"""Exercise 05: LayerNorm, backward.

Training needs the gradient of every layer. Derive LayerNorm's on paper first, then write
``layer_norm_backward`` below and check it from the repository root:

    minialign exercise check 05

The checker compares your gradients with minialign's hand-written backward, with torch's
autograd and with finite differences of the forward (the numerical check llm.c's LayerNorm
tutorial ends with). Read first: docs/training.md, "Backward passes, llm.c style".
"""

import numpy as np


def layer_norm_backward(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, eps: float):
    # [..., H], [..., H], [H], float -> (dx [..., H], dweight [H], dbias [H])
    """The gradients of y = layer_norm(x, weight, bias, eps) (exercise 04) given dy = dL/dy.

    With the mean and the variance over the last axis (H features),

        rstd  = 1 / sqrt(var + eps)
        x_hat = (x - mean) * rstd              so  y = x_hat * weight + bias
        g     = dy * weight                    dL/dx_hat

        dbias   = sum over every leading axis of dy
        dweight = sum over every leading axis of dy * x_hat
        dx      = ?   x_i reaches the loss three ways: directly, through the mean and through the
                      variance. Derive it (the answer is in minialign/training/backward.py; look
                      after you have tried).

    Returns (dx, dweight, dbias).
    """
    mean = x.mean(axis=-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + eps)
    x_hat = (x - mean) * rstd
    g = dy * weight
    # d x_hat_j / d x_i = rstd * (delta_ij - 1/H - x_hat_i x_hat_j / H): the direct path, the mean, the variance
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
    H = x.shape[-1]
    dweight = (dy * x_hat).reshape(-1, H).sum(axis=0)
    dbias = dy.reshape(-1, H).sum(axis=0)
    return dx, dweight, dbias
