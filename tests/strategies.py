"""Shared hypothesis strategies: small sizes with odd and prime members, bounded float arrays."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

# Sizes a kernel or a reshape gets wrong first: 1, primes, odd numbers, a power of two.
small_sizes = st.sampled_from([1, 2, 3, 5, 7, 8, 11, 13])
tiny_sizes = st.sampled_from([1, 2, 3, 5])


@st.composite
def float_arrays(draw, shape, scale: float = 3.0, dtype=np.float32):
    """An array of the given shape with values drawn from a seeded normal * scale.

    Hypothesis draws the seed (and so shrinks over it) instead of every element: element-wise
    drawing of thousands of floats is slow and rarely finds more than a seeded draw does.
    Each array also gets a drawn offset, so ops see non-centred inputs.
    """
    seed = draw(st.integers(0, 2**32 - 1))
    offset = draw(st.sampled_from([0.0, 1.0, -2.5]))
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + offset).astype(dtype)


seeds = st.integers(0, 2**32 - 1)
