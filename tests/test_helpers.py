"""The comparison helper must fail loudly and informatively (a helper that cannot fail proves nothing)."""

import numpy as np
import pytest

from helpers import assert_close
from minialign.array_errors import array_errors
from minialign.parity import Tolerance, compare_arrays


def test_passes_within_tolerance():
    assert_close(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 5e-6]), atol=1e-5, rtol=0)


def test_reports_count_max_error_and_first_index():
    expected = np.zeros((2, 3))
    actual = expected.copy()
    actual[1, 2] = 0.5
    actual[0, 1] = 0.25
    with pytest.raises(AssertionError) as info:
        assert_close(actual, expected, atol=1e-3, rtol=0, name="x")
    msg = str(info.value)
    assert "2 of 6 elements" in msg
    assert "max abs error 5.000e-01" in msg
    assert "first mismatch at index (0, 1)" in msg


def test_nan_is_a_mismatch_unless_both_sides_have_it():
    with pytest.raises(AssertionError, match="NaN: actual 1"):
        assert_close(np.array([np.nan]), np.array([0.0]), atol=1, rtol=1)
    assert_close(np.array([np.nan, np.inf]), np.array([np.nan, np.inf]), atol=0, rtol=0)


def test_shape_mismatch():
    with pytest.raises(AssertionError, match="shape"):
        assert_close(np.zeros(3), np.zeros(4), atol=1, rtol=1)


# -- the shared statistics (minialign.array_errors): one hand case per tolerance form -------------


def test_array_errors_elementwise_hand_case():
    # |a - e| = (0, 0.5, 0.25, 0.1); allowed = 0.1 + 0.1 * |e| = (0.2, 0.3, 0.5, 0.1).
    errors = array_errors([1.0, 2.5, -3.75, 0.1], [1.0, 2.0, -4.0, 0.0], atol=0.1, rtol=0.1)
    assert (errors.mismatches, errors.first_mismatch) == (1, (1,))  # only 0.5 > 0.3; 0.1 <= 0.1
    assert errors.max_abs == 0.5
    assert errors.max_rel == np.inf  # 0.1 / |0|: elementwise, an error where e = 0 is infinitely relative
    assert errors.scale == 4.0 and not errors.ok


def test_array_errors_normwise_hand_case():
    # The same arrays, normwise: allowed = 0.1 + 0.1 * max|e| = 0.5 everywhere, so all are close.
    errors = array_errors([1.0, 2.5, -3.75, 0.1], [1.0, 2.0, -4.0, 0.0], atol=0.1, rtol=0.1, normwise=True)
    assert errors.ok and errors.first_mismatch is None
    assert (errors.max_abs, errors.max_rel) == (0.5, 0.125)  # 0.5 / max|e|


def test_array_errors_special_values():
    actual = np.array([[np.nan, np.inf, 1.0], [-np.inf, 2.0, np.nan]])
    expected = np.array([[np.nan, np.inf, np.inf], [np.inf, 2.0, 0.0]])
    errors = array_errors(actual, expected, atol=1.0, rtol=1.0)
    # (0, 0) and (0, 1) match; finite vs inf, -inf vs inf and NaN vs 0 are infinite errors even
    # though rtol * |inf| would allow anything.
    assert (errors.mismatches, errors.first_mismatch) == (3, (0, 2))
    assert errors.max_abs == np.inf and errors.max_rel == np.inf
    assert (errors.nan_actual, errors.nan_expected, errors.inf_actual, errors.inf_expected) == (2, 1, 2, 3)
    assert array_errors(np.zeros(0), np.zeros(0), atol=0, rtol=0).ok  # empty: nothing differs
    with pytest.raises(ValueError, match="shape"):
        array_errors(np.zeros(3), np.zeros(4), atol=1, rtol=1)


def test_assert_close_and_parity_report_the_same_numbers():
    rng = np.random.default_rng(0)
    expected = rng.standard_normal((5, 7))
    actual = expected + 1e-3 * rng.standard_normal((5, 7))
    row = compare_arrays("x", actual, expected, Tolerance(atol=0.0, rtol=0.0))
    with pytest.raises(AssertionError) as info:
        assert_close(actual, expected, atol=0.0, rtol=0.0)
    assert f"max abs error {row.max_abs:.3e}" in str(info.value)
