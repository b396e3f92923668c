"""The result every sampler returns (`Posterior`) and the pieces of its ArviZ DataTree they share."""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple, cast

import arviz_stats as azs
import numpy as np
import xarray as xr
from scipy import stats

from ..._model import AbstractDiffusion


__all__ = ["Posterior", "event_dims", "log_mean_exp", "observed_dataset", "rhat_max"]


class Posterior(NamedTuple):
    """The result of `dpm_ppl.posterior`.

    - `sampler`: the sampler's name (``"smc"``, ``"nuts"``, ``"perturbed"``).
    - `tree`: the DataTree: ``posterior`` (x0 and the query's latents, dims chain, draw, datum,
      dim…), ``sample_stats`` (per sampler: SMC's ESS per step, log Z per run and final log
      weights; NUTS's divergences and the whitened noises' step sizes), ``observed_data``.
    - `log_Z`, `log_Z_stderr`: log E_p[r(x⁰)] per datum and its standard error over independent
      runs (None for NUTS).
    - `ess_min`: the smallest ESS (SMC: over steps and data; NUTS: bulk ESS of x⁰).
    - `khat`: the largest PSIS k̂ of the final importance weights within a run, or None.
    - `rhat_max`: the largest R-hat of x⁰ across chains or runs, or None.
    - `seconds`: wall time of sampling (compilation included).
    - `khat_all`: PSIS k̂ per run and datum, or None.
    - `diagnostics`: further numbers of the sampler (e.g. SMC's spread of log Ẑ over runs and its
      tail diagnostic, rejuvenation acceptance), all JSON-ready floats.
    - `warnings`: what the sampler found doubtful about its own answer, in words.
    """

    sampler: str
    tree: xr.DataTree
    log_Z: np.ndarray | None
    log_Z_stderr: np.ndarray | None
    ess_min: float
    khat: float | None
    rhat_max: float | None
    seconds: float
    khat_all: np.ndarray | None = None
    diagnostics: dict | None = None
    warnings: tuple[str, ...] = ()

    @property
    def x0(self) -> np.ndarray:
        """Posterior draws of x⁰, shape ``(chain, draw, datum, *event)``."""
        return cast(xr.DataArray, self.tree["posterior"]["x0"]).values  # a variable (DataTree[...] is a union)

    def log_Z_interval(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray] | None:
        """The Student-t interval log Z ± t_{n−1}·stderr over the n independent runs (None for NUTS).

        With few runs the standard error is itself uncertain; the t quantile (3.18 at n = 4 for 95%)
        accounts for that, where ±1.96·stderr would cover the truth in only 86% of repeats at n = 4.
        """
        n = (self.diagnostics or {}).get("num_runs")
        if self.log_Z is None or not n or n < 2:
            return None
        half = stats.t.ppf(0.5 + level / 2, n - 1) * np.asarray(self.log_Z_stderr)
        return self.log_Z - half, self.log_Z + half

    def summary(self, **kwargs) -> Any:
        """`arviz_stats.summary` of the posterior group (a pandas DataFrame, or what ``kwargs`` ask for)."""
        return azs.summary(self.tree, **kwargs)

    def report(self) -> dict:
        """Every number above as a JSON-ready dict (NaN and ±inf become None)."""

        def num(x):
            return None if x is None or not np.isfinite(x) else float(x)

        def nums(a):
            return None if a is None else [num(v) for v in np.atleast_1d(a)]

        interval = self.log_Z_interval()
        return {
            "sampler": self.sampler,
            "log_Z": nums(self.log_Z),
            "log_Z_stderr": nums(self.log_Z_stderr),
            "log_Z_ci95": None if interval is None else [nums(interval[0]), nums(interval[1])],
            "log_Z_total": None if self.log_Z is None else num(np.sum(self.log_Z)),
            "ess_min": num(self.ess_min),
            "khat": num(self.khat),
            "khat_frac_over_0p7": None if self.khat_all is None else float(np.mean(self.khat_all > 0.7)),
            "rhat_max": num(self.rhat_max),
            "seconds": self.seconds,
            **{k: num(v) for k, v in (self.diagnostics or {}).items()},
            "warnings": list(self.warnings),
        }


def event_dims(diffusion: AbstractDiffusion) -> list[str]:
    """The DataTree dimension names of one example's axes."""
    return [f"dim_{i}" for i in range(diffusion.event_ndim)]


def observed_dataset(observations: dict) -> xr.Dataset:
    """The numeric observations as the ``observed_data`` group."""
    out = {}
    for name, v in observations.items():
        v = np.asarray(v)
        if v.dtype.kind in "biuf":
            out[name] = ([f"{name}_dim_{i}" for i in range(v.ndim)], v)
    return xr.Dataset(out)


def rhat_max(tree: xr.DataTree) -> float | None:
    """The largest R-hat of x⁰ over its coordinates; clamped (constant) coordinates have none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = azs.rhat(tree, var_names=["x0"])["x0"].values
    return float(np.nanmax(rhat)) if np.isfinite(rhat).any() else None


def log_mean_exp(a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """log of the mean of exp(a) along ``axis`` and its delta-method standard error
    sd(eᵃ)/(√n·mean(eᵃ)) (NaN for one value)."""
    a = np.asarray(a, np.float64)
    m = np.max(a, axis=axis, keepdims=True)
    w = np.exp(a - m)
    mean = w.mean(axis=axis)
    n = a.shape[axis]
    se = w.std(axis=axis, ddof=1) / (math.sqrt(n) * mean) if n > 1 else np.full(mean.shape, np.nan)
    return np.log(mean) + np.squeeze(m, axis), se
