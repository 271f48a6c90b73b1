"""The comparison helper must fail loudly and informatively (a helper that cannot fail proves nothing)."""

import numpy as np
import pytest

from helpers import assert_close


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
