"""The standard error every table reports, written once."""

from __future__ import annotations

import math

import numpy as np


__all__ = ["mean_stderr"]


def mean_stderr(x: np.ndarray) -> tuple[float, float]:
    """The mean over data and its standard error sd/√n (ddof = 1; NaN for one datum), in float64."""
    x = np.asarray(x, np.float64).ravel()
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")
    return float(x.mean()), se
