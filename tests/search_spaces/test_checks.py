"""The shared config type checks: bools are not numbers, NumPy scalars are, non-finite floats are not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from search_spaces.checks import is_int, is_number


@pytest.mark.parametrize("value", [0, -3, 7, np.int64(5), np.uint8(2)])
def test_is_int_accepts_integers(value: object) -> None:
    assert is_int(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 1.0, np.float32(2), "1", None])
def test_is_int_rejects_non_integers(value: object) -> None:
    assert not is_int(value)


@pytest.mark.parametrize("value", [0, 2.5, -1e-9, np.int32(3), np.float64(0.1), np.float16(1)])
def test_is_number_accepts_finite_numbers(value: object) -> None:
    assert is_number(value)


@pytest.mark.parametrize("value", [True, np.bool_(False), math.inf, -math.inf, math.nan, np.float32("nan"), "1", None])
def test_is_number_rejects_bools_non_finite_and_non_numbers(value: object) -> None:
    assert not is_number(value)
