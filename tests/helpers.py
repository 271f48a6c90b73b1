"""Comparison helpers shared by every test.

``assert_close`` is how every test compares numbers with a reference. On failure it
says how badly and where: max abs and rel error, how many elements are out of tolerance, the first
offending index with both values, and whether either side has NaN/inf. The statistics themselves
are computed by ``minialign.array_errors``, the code behind ``minialign parity`` too, so both
report the same numbers; only the tolerance differs (elementwise here, normwise there).
"""

from __future__ import annotations

import numpy as np

from minialign.array_errors import array_errors

# Tolerances per dtype, with the reason. Use these names in tests instead of bare numbers.
TOLERANCES = {
    # float32 layer vs torch float32: the same math in a different order of summation; errors
    # grow like sqrt(K) * eps(2**-23 ~ 1.2e-7) in a K-term dot product, so 1e-5 leaves room for
    # K in the thousands and for our float32 erf (error < 2e-7).
    "float32": dict(atol=1e-5, rtol=1e-5),
    # A deep float32 stack (12 BERT layers) vs torch: LayerNorm keeps values O(1); measured
    # errors are ~1e-6, the issues ask for <= 1e-4.
    "float32_model": dict(atol=1e-4, rtol=0.0),
    # bfloat16 keeps 8 bits of mantissa: one rounding is ~4e-3 relative.
    "bfloat16": dict(atol=2e-2, rtol=2e-2),
    # float16 keeps 11 bits: one rounding is ~5e-4 relative.
    "float16": dict(atol=2e-3, rtol=2e-3),
}


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; keep torch out of this module's imports
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def assert_close(actual, expected, *, atol: float, rtol: float, name: str = "tensor") -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise, verbosely.

    NaN matches NaN and inf matches the same inf; any other NaN/inf is a mismatch. The numbers in
    the message come from ``minialign.array_errors``, as in the parity report.
    """
    a, e = _to_numpy(actual), _to_numpy(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {a.shape} != expected {e.shape}")
    errors = array_errors(a, e, atol=atol, rtol=rtol)
    if errors.ok:
        return
    first = errors.first_mismatch
    a, e = a.astype(np.float64), e.astype(np.float64)
    raise AssertionError(
        f"{name}: {errors.mismatches} of {errors.size} elements differ beyond atol={atol}, rtol={rtol}\n"
        f"  max abs error {errors.max_abs:.3e}, max rel error {errors.max_rel:.3e}\n"
        f"  first mismatch at index {first}: actual {a[first]!r}, expected {e[first]!r}\n"
        f"  NaN: actual {errors.nan_actual}, expected {errors.nan_expected}; "
        f"inf: actual {errors.inf_actual}, expected {errors.inf_expected}"
    )


def max_abs_error(actual, expected) -> float:
    """max |actual - expected| (inf when a NaN/inf is on one side only)."""
    a, e = _to_numpy(actual), _to_numpy(expected)
    if a.shape != e.shape:
        raise AssertionError(f"shape {a.shape} != expected {e.shape}")
    return array_errors(a, e, atol=0.0, rtol=0.0).max_abs
