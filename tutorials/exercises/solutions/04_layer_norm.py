"""Exercise 04: LayerNorm, forward.

Every BERT sublayer ends in a LayerNorm. Write ``layer_norm`` below, then check it from the
repository root:

    minialign exercise check 04

Read first: docs/text-tower.md, "The encoder layer: post-norm" (and docs/kernels/layer-norm.md
for the same math as a Triton kernel).
"""

import numpy as np


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    # [..., H], [H], [H], float -> [..., H]
    """Normalise each row of H features (the last axis), then scale and shift per feature:

        mean = (1/H) sum_i x_i
        var  = (1/H) sum_i (x_i - mean)^2          the biased (population) variance
        y    = (x - mean) / sqrt(var + eps) * weight + bias
    """
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias
