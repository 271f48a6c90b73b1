"""Exercise 03: GELU, the exact one.

BERT's feed-forward network uses the exact GELU (transformers' "gelu"), not the tanh
approximation GPT-2 made popular. Write ``gelu`` below, then check it from the repository root:

    minialign exercise check 03

Read first: docs/text-tower.md, "GELU, exactly, and how erf is computed".
"""

import math

import numpy as np


def gelu(x: np.ndarray) -> np.ndarray:  # [...] float32 -> [...] float32
    """x times the standard normal CDF of x:

        gelu(x) = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))

    NumPy has no erf: apply ``math.erf`` to every element (``np.vectorize(math.erf)`` does, slowly)
    or write your own (the docs page explains the reference's). Return float32, like the model.
    """
    raise NotImplementedError("exercise 03: write gelu")
