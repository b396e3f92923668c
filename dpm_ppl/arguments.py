"""Checks of the arguments users pass, written once: each error names the argument, the value and the fix."""

from __future__ import annotations

import numpy as np


__all__ = ["positive_int"]


def positive_int(name: str, value: object, fix: str = "") -> int:
    """``value`` as an int, or a `ValueError` naming ``name`` (and the ``fix``) when it is not a positive integer
    (``True`` and ``1.0`` are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}." + (f" {fix}" if fix else ""))
    return int(value)
