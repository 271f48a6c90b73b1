"""How far an array is from a reference: the error statistics behind every comparison.

Two places compare numbers with a reference and print what they find: the layer-by-layer parity
report (``minialign.parity.compare_arrays``) and the test suite's ``assert_close``. Both read
their numbers from ``array_errors`` here, so a max error or a mismatch count means the same thing
in a failing test as in ``minialign parity``. They differ only in what "close" means:

    elementwise (the tests, like numpy.allclose):  |a_i - e_i| <= atol + rtol * |e_i|
        max_rel = max_i |a_i - e_i| / |e_i|
    normwise (the parity report):                  |a_i - e_i| <= atol + rtol * max_j |e_j|
        max_rel = max_abs / max_j |e_j|

The normwise form scales the allowance with the tensor's largest value: hidden states have many
entries near zero, where |a - e| / |e| is large for any rounding difference and says nothing about
the layer, while the elementwise form suits a single op whose outputs are all O(1).

Special values: NaN against NaN and inf against the same inf match (error 0); a NaN or inf on
one side only (or +inf against -inf) is an infinite error and always a mismatch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_TINY = float(np.finfo(np.float32).tiny)  # guards max_abs / max|e| when the reference is all zeros


@dataclass(frozen=True)
class ArrayErrors:
    shape: tuple[int, ...]
    max_abs: float  # max |a - e|; inf when some NaN/inf is on one side only; 0.0 for an empty array
    max_rel: float  # elementwise max |a - e| / |e| (an error where e = 0 is inf), or normwise max_abs / max|e|
    scale: float  # max |e| over the elements finite on both sides (0.0 if none)
    mismatches: int  # elements outside the tolerance, one-sided NaN/inf included
    first_mismatch: tuple[int, ...] | None  # index of the first, in C order; None when all are close
    nan_actual: int
    nan_expected: int
    inf_actual: int
    inf_expected: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def ok(self) -> bool:
        """Every element within tolerance."""
        return self.mismatches == 0


def array_errors(actual, expected, *, atol: float, rtol: float, normwise: bool = False) -> ArrayErrors:
    """The errors of ``actual`` against the reference ``expected`` (array-likes of one shape,
    compared in float64) under ``atol`` / ``rtol``, elementwise or normwise (module docstring).

    Raises ValueError when the shapes differ: there is no elementwise error to speak of; callers
    turn that into their own message (an AssertionError, a failing parity row).
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"shape {a.shape} != expected {e.shape}")
    nan_a, nan_e, inf_a, inf_e = np.isnan(a), np.isnan(e), np.isinf(a), np.isinf(e)
    finite = ~(nan_a | nan_e | inf_a | inf_e)
    same_special = (nan_a & nan_e) | (inf_a & (a == e))
    # |a - e| where both are finite, 0 for matching specials, inf for a special on one side only.
    with np.errstate(invalid="ignore"):  # inf - inf; replaced just below
        diff = np.where(finite, np.abs(a - e), np.where(same_special, 0.0, np.inf))
    scale = float(np.abs(e[finite]).max()) if finite.any() else 0.0
    allowed = atol + rtol * (scale if normwise else np.abs(np.where(finite, e, 0.0)))
    bad = ~same_special & (~finite | ~(diff <= allowed))

    max_abs = float(diff.max()) if diff.size else 0.0
    if normwise:
        max_rel = max_abs / max(scale, _TINY)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(diff == 0, 0.0, diff / np.abs(np.where(finite, e, 1.0)))  # x / 0 -> inf
        max_rel = float(rel.max()) if rel.size else 0.0
    first = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else None
    return ArrayErrors(shape=a.shape, max_abs=max_abs, max_rel=max_rel, scale=scale, mismatches=int(bad.sum()),
                       first_mismatch=first, nan_actual=int(nan_a.sum()), nan_expected=int(nan_e.sum()),
                       inf_actual=int(inf_a.sum()), inf_expected=int(inf_e.sum()))
