"""Independent runs of a particle sampler (`SMC`, `Perturbed`), and their result with honest error bars.

log Z's standard error comes from the spread of Ẑ over independent runs (Ẑ of each run is unbiased
for Z). Heavy tails of the run-level Ẑ make that spread, and so the error bar, too small while most
runs agree (the rare large run that carries the mean has not been seen). Two diagnostics catch it:
the effective number of runs (Σ Ẑ)²/Σ Ẑ², which drops when one run dominates, and, with 25 runs or
more, the PSIS k̂ of the run-level Ẑ (Vehtari et al. 2024). `Posterior.warnings` names either.
"""

from __future__ import annotations

import time
import warnings

import equinox as eqx
import jax
import numpy as np
import xarray as xr
from jaxtyping import PRNGKeyArray
from tqdm.auto import tqdm

from .._psis import psis_khat
from .._query import LogR, QueryError
from . import _smc_engine as engine
from ._result import Posterior, event_dims, log_mean_exp, observed_dataset, rhat_max


__all__ = ["run_particles"]


def _one_run(log_r: LogR, key: PRNGKeyArray, num_particles: int, exact: bool, options: dict):
    """One run of `engine.run` and its draws (resampled by the final weights when ``exact``)."""
    k_run, k_draw = jax.random.split(key)
    out = engine.run(log_r, k_run, num_particles, resample=exact, **options)
    if exact:
        idx = engine.resample_indices(k_draw, out.log_weights, log_r.joint)
        draws = engine.gather((out.x0, out.latents), idx, out.x0.shape[1])
    else:
        draws = (out.x0, out.latents)
    return out, draws


# `LogR` is a pytree whose observations and model are traced: one program per query function, shapes and
# options, reused by later calls with new observations or a retrained model of the same architecture.
_one_run_traced = eqx.filter_jit(_one_run)


def _run_all(log_r: LogR, key: PRNGKeyArray, num_particles: int, num_runs: int, exact: bool, progress: bool, options):
    def one(k):
        return _one_run_traced(log_r, k, num_particles, exact, options)

    results = []
    keys = jax.random.split(key, num_runs)
    for i, k in enumerate(tqdm(keys, desc="runs", disable=not progress, leave=False)):
        try:
            results.append(jax.device_get(one(k)))
        except jax.errors.JAXTypeError:
            if i:
                raise
            # the query needs concrete observations (numpy on them): compile it with them as constants
            one = jax.jit(lambda k: _one_run(log_r, k, num_particles, exact, options))
            results.append(jax.device_get(one(k)))
    return jax.tree.map(lambda *a: np.stack(a), *results)


def _check_nan(log_r: LogR, nan: np.ndarray) -> None:
    if nan.any():
        step, datum = np.argwhere(nan.max(0))[0]
        raise QueryError(
            f"The query's log r(x⁰) was NaN for {int(nan.sum())} particle steps (first at step "
            f"{log_r.diffusion.num_steps - int(step)} of the reverse chain, datum {int(datum)}; sites "
            f"{log_r.observed}). log r must be finite or −inf everywhere x⁰ can go."
        )


def _tree(log_r: LogR, outs: engine.SMCOutput, x0, latents, observations) -> xr.DataTree:
    diffusion = log_r.diffusion
    post = {"x0": (["chain", "draw", "datum", *event_dims(diffusion)], x0)}
    for name, v in latents.items():
        post[name] = (["chain", "draw"] + [f"{name}_dim_{i}" for i in range(v.ndim - 2)], v)
    stats = {
        "ess": (["chain", "step", "datum"], outs.ess),
        "resampled": (["chain", "step", "datum"], outs.resampled),
        "accept": (["chain", "step", "datum"], outs.accept),
        "log_Z": (["chain", "datum"], outs.log_Z),
        "log_weight": (["chain", "draw", "datum"], outs.log_weights),
    }
    step_coord = {"step": np.arange(diffusion.num_steps, -1, -1)}  # the state each step produced: x^T … x⁰
    return xr.DataTree.from_dict(
        {
            "posterior": xr.Dataset(post),
            "sample_stats": xr.Dataset(stats, coords=step_coord),
            "observed_data": observed_dataset(observations),
        }
    )


def run_particles(
    name: str,
    log_r: LogR,
    key: PRNGKeyArray,
    *,
    num_particles: int,
    num_runs: int,
    exact: bool,
    progress: bool,
    **options,
) -> Posterior:
    """``num_runs`` independent runs of `engine.run`; draws resampled by the final weights when ``exact``."""
    t0 = time.perf_counter()
    outs, (x0, latents) = _run_all(log_r, key, num_particles, num_runs, exact, progress, options)
    seconds = time.perf_counter() - t0
    _check_nan(log_r, outs.nan_count)
    tree = _tree(log_r, outs, x0, latents, log_r.observations)
    log_Z_runs = np.asarray(outs.log_Z, np.float64)  # (run, datum)
    log_Z, log_Z_se = log_mean_exp(log_Z_runs, axis=0)
    khat = psis_khat(np.moveaxis(np.asarray(outs.log_weights), 1, -1))  # (run, datum)
    rel = np.exp(log_Z_runs - log_Z_runs.max(0))
    runs_ess = rel.sum(0) ** 2 / (rel**2).sum(0)
    run_khat = psis_khat(log_Z_runs.T) if num_runs >= 25 else np.full(log_Z_runs.shape[1], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        diagnostics = {
            "num_particles": float(num_particles),
            "num_runs": float(num_runs),
            "log_Z_run_sd_max": float(np.max(log_Z_runs.std(0, ddof=1))) if num_runs > 1 else None,
            "runs_ess_min": float(np.min(runs_ess)),
            "run_khat_max": float(np.nanmax(run_khat)) if np.isfinite(run_khat).any() else None,
            "accept_mean": float(np.nanmean(outs.accept)) if np.isfinite(outs.accept).any() else None,
        }
    notes = []
    if exact and num_runs > 1 and runs_ess.min() < 0.5 * num_runs:
        notes.append(
            f"One run's Ẑ dominates the others (effective number of runs {runs_ess.min():.1f} of {num_runs}): "
            "the run-level Ẑ is heavy-tailed and log_Z_stderr is too small. Use more particles, a better twist or "
            "rejuvenation."
        )
    if np.isfinite(run_khat).any() and np.nanmax(run_khat) > 0.7:
        notes.append(f"PSIS k̂ of the runs' Ẑ is {np.nanmax(run_khat):.2f} > 0.7: log Z's error bar is unreliable.")
    if np.isfinite(khat).any() and np.nanmax(khat) > 0.7:
        notes.append(
            f"PSIS k̂ of the final weights reaches {np.nanmax(khat):.2f} > 0.7 "
            + (
                "(the perturbed sampler is biased here; use dpm_ppl.SMC)."
                if not exact
                else "(few particles carry the posterior)."
            )
        )
    rhat = rhat_max(tree) if num_runs > 1 else None
    if exact and rhat is not None and rhat > 1.05:
        notes.append(f"R-hat of x⁰ across runs is {rhat:.2f} > 1.05: the runs disagree; use more particles.")
    ess_min = float(np.min(outs.ess))
    khat_max = float(np.nanmax(khat)) if np.isfinite(khat).any() else None
    return Posterior(name, tree, log_Z, log_Z_se, ess_min, khat_max, rhat, seconds, khat, diagnostics, tuple(notes))
