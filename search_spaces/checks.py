"""Type checks for config validation, shared by every layer.

``bool`` is an ``int`` subclass in Python, so ``isinstance(True, int)`` holds; configs must not take
``True`` for a count or a rate, so these checks reject it. NumPy scalars pass.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["is_int", "is_number"]


def is_int(value: object) -> bool:
    """True for a Python or NumPy integer that is not a ``bool``."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """True for a finite Python or NumPy int or float that is not a ``bool``."""
    number_types = (int, float, np.integer, np.floating)
    return isinstance(value, number_types) and not isinstance(value, bool) and math.isfinite(value)
