"""Comparison helpers shared by every test.

``assert_close`` is the one place where minialign compares numbers with a reference. On failure it
says how badly and where: max abs and rel error, how many elements are out of tolerance, the first
offending index with both values, and whether either side has NaN/inf.
"""

from __future__ import annotations

import numpy as np

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
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise, verbosely."""
    a = _to_numpy(actual).astype(np.float64)
    e = _to_numpy(expected).astype(np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {a.shape} != expected {e.shape}")
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    inf_a, inf_e = np.isinf(a), np.isinf(e)
    with np.errstate(invalid="ignore"):  # inf - inf is NaN; handled as a special value below
        diff = np.abs(a - e)
    # NaN matches NaN and inf matches the same inf; anything else non-finite is a mismatch.
    same_special = (nan_a & nan_e) | (inf_a & inf_e & (np.sign(a) == np.sign(e)))
    with np.errstate(invalid="ignore"):
        bad = ~same_special & ~(diff <= atol + rtol * np.abs(e))
    if not bad.any():
        return
    finite = ~(nan_a | nan_e | inf_a | inf_e)
    max_abs = diff[finite].max() if finite.any() else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = diff / np.abs(e)
    max_rel = rel[finite].max() if finite.any() else float("nan")
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise AssertionError(
        f"{name}: {int(bad.sum())} of {bad.size} elements differ beyond atol={atol}, rtol={rtol}\n"
        f"  max abs error {max_abs:.3e}, max rel error {max_rel:.3e}\n"
        f"  first mismatch at index {first}: actual {a[first]!r}, expected {e[first]!r}\n"
        f"  NaN: actual {int(nan_a.sum())}, expected {int(nan_e.sum())}; "
        f"inf: actual {int(inf_a.sum())}, expected {int(inf_e.sum())}"
    )


def max_abs_error(actual, expected) -> float:
    return float(np.max(np.abs(_to_numpy(actual).astype(np.float64) - _to_numpy(expected).astype(np.float64))))
