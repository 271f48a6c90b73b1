"""Checks on user-given values, shared by the modules that validate their arguments."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer: a Python ``int`` or a NumPy integer scalar, but not a bool.

    ``bool`` is a subclass of ``int`` in Python, so ``isinstance(True, int)`` holds; yet a bool
    passed where a count, a size or a token id is expected is a mistake (``max_length=True``,
    ``image_size=False``), not the number 1 or 0, and is refused rather than silently used.
    ``np.bool_`` is not an ``np.integer``, so it is refused too; it is named explicitly so the
    rule reads in one place.
    """
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_fraction(value: Any) -> bool:
    """Whether ``value`` is a number in [0, 1] (a share of examples): int or float, NumPy's too, not a bool."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            and 0 <= value <= 1)
