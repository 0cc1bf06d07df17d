"""Growable numpy arrays: capacity that doubles, so appending is amortised O(1)."""

from __future__ import annotations

import numpy as np


def grown(array: np.ndarray, size: int, fill: float) -> np.ndarray:
    """``array`` with room for ``size`` rows (the same array when it has them; new rows
    ``fill``)."""
    if size <= len(array):
        return array
    out = np.full((max(size, 2 * len(array), 16), *array.shape[1:]), fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


def grown_square(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` (n, n) padded with zeros to at least (size, size) (the same array when it
    is that big)."""
    if size <= len(array):
        return array
    out = np.zeros((size, size), dtype=array.dtype)
    out[: len(array), : len(array)] = array
    return out
