"""Checks of the arguments users pass, written once: each error names the argument, the value and the fix."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


__all__ = ["check_binary", "check_data", "positive_int"]


def positive_int(name: str, value: object, fix: str = "") -> int:
    """``value`` as an int, or a `ValueError` naming ``name`` (and the ``fix``) when it is not a positive integer
    (``True`` and ``1.0`` are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}." + (f" {fix}" if fix else ""))
    return int(value)


def check_data(x: npt.ArrayLike, event_shape: tuple[int, ...] | None = None, name: str = "data") -> np.ndarray:
    """Validate data at the door: a non-empty float array, finite, of the model's event shape."""
    x = np.asarray(x)
    if x.dtype == object or x.ndim < 2:
        raise ValueError(
            f"`{name}` must be an array of shape (num_examples, *event_shape), got shape {x.shape}. "
            "Stack the examples along the first axis."
        )
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (shape {x.shape}): give at least one example.")
    if event_shape is not None and tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"`{name}` has examples of shape {tuple(x.shape[1:])} but the model expects {tuple(event_shape)}."
        )
    x = x.astype(np.float32)
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        idx = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"`{name}` contains a non-finite value {float(x[idx])!r} at index {idx} ({len(bad)} in all). "
            "Remove or impute those entries before training."
        )
    return x


def check_binary(x: np.ndarray, name: str = "data") -> np.ndarray:
    """Validate binary data at the door: every entry 0 or 1 (binomial diffusion, Table App.1).

    Raises `ValueError` naming the first offending entry's index and value.
    """
    x = np.asarray(x)
    bad = np.argwhere((x != 0) & (x != 1))
    if bad.size:
        idx = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"`{name}` must be binary (0 or 1) for binomial diffusion, but has {x[idx].item()!r} at index {idx} "
            f"({len(bad)} such entries in all). Threshold or binarise the data first."
        )
    return x
