"""``posterior(query, model, observations, method=...)``: sample p̃(x⁰) ∝ p(x⁰)·r(x⁰) (paper §2.5).

Three methods, one interface, one kind of result (an ArviZ DataTree with diagnostics):

- ``"perturbed"``: the paper's perturbed reverse kernels (Eq 22, App. C Eq 61; `dpm_ppl.perturb`)
  with r(xᵗ) = r(x⁰) at every step (Eq 16). Fast and **biased**: the draws are taken as they are.
  Its importance weights against the exact target are still computed, and their ESS and PSIS k̂
  measure the bias (high k̂: do not trust it; use ``"smc"``).
- ``"smc"``: the same particles made exact by sequential importance resampling (`dpm_ppl.smc`),
  with annealed intermediate targets r(xᵗ)^{(T−t)/T} (Eq 23) by default; gives log Z =
  log E_p[r(x⁰)] with a standard error over independent runs (``num_chains``).
- ``"nuts"``: NumPyro's NUTS on the whole trajectory and x⁰ (and the query's own latents), with
  potential −log p(x⁰…x^T) − log r(x⁰), several chains; exact and slow — the gold standard on small
  models, with R-hat and ESS. Gaussian diffusion only (binomial states are discrete).

The query is an ordinary NumPyro model (`dpm_ppl.query`).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Literal, NamedTuple

import arviz_stats as azs
import jax
import numpy as np
import xarray as xr
from jaxtyping import PRNGKeyArray
from numpyro.infer import MCMC, NUTS, init_to_sample

from . import smc
from .family import GaussianFamily
from .likelihood import psis_khat
from .model import X0, AbstractDiffusion
from .query import LogR, QueryError, QueryModel


__all__ = ["Posterior", "posterior"]

Method = Literal["perturbed", "smc", "nuts"]
METHODS = ("perturbed", "smc", "nuts")


class Posterior(NamedTuple):
    """The result of `posterior`.

    - `method`: which sampler.
    - `tree`: the DataTree: ``posterior`` (x0 and the query's latents, dims chain, draw, datum,
      dim…), ``sample_stats`` (SMC: ESS per step, log Z per chain, final log weights; NUTS:
      divergences), ``observed_data`` (the observations).
    - `log_Z`, `log_Z_stderr`: log E_p[r(x⁰)] per datum and its standard error (None for NUTS).
    - `ess_min`: the smallest ESS (SMC/perturbed: over steps and data; NUTS: bulk ESS of x⁰).
    - `khat`: the largest PSIS k̂ of the final importance weights (SMC/perturbed), or None.
    - `rhat_max`: the largest R-hat of x⁰ (NUTS; SMC over independent runs), or None.
    - `seconds`: wall time of sampling (compilation included).
    - `khat_all`: PSIS k̂ per run and datum (SMC/perturbed), or None.
    """

    method: str
    tree: xr.DataTree
    log_Z: np.ndarray | None
    log_Z_stderr: np.ndarray | None
    ess_min: float
    khat: float | None
    rhat_max: float | None
    seconds: float
    khat_all: np.ndarray | None = None

    @property
    def x0(self) -> np.ndarray:
        """Posterior draws of x⁰, shape ``(chain, draw, datum, *event)``."""
        return self.tree["posterior"]["x0"].values

    def summary(self, **kwargs) -> object:
        """`arviz_stats.summary` of the posterior group."""
        return azs.summary(self.tree, **kwargs)

    def report(self) -> dict:
        """The numbers of ``query.json``."""

        def num(x):
            return None if x is None or not np.isfinite(x) else float(x)

        return {
            "method": self.method,
            "log_Z": None if self.log_Z is None else [float(v) for v in np.atleast_1d(self.log_Z)],
            "log_Z_stderr": None if self.log_Z_stderr is None else [float(v) for v in np.atleast_1d(self.log_Z_stderr)],
            "log_Z_total": None if self.log_Z is None else float(np.sum(self.log_Z)),
            "ess_min": float(self.ess_min),
            "khat": num(self.khat),
            "khat_frac_over_0p7": None if self.khat_all is None else float(np.mean(self.khat_all > 0.7)),
            "rhat_max": num(self.rhat_max),
            "seconds": self.seconds,
        }


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def _event_dims(diffusion: AbstractDiffusion) -> list[str]:
    return [f"dim_{i}" for i in range(diffusion.event_ndim)]


def _log_mean_exp(a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """log of the mean of exp(a) along ``axis`` and its delta-method standard error."""
    m = np.max(a, axis=axis, keepdims=True)
    w = np.exp(a - m)
    mean = w.mean(axis=axis)
    n = a.shape[axis]
    se = w.std(axis=axis, ddof=1) / (math.sqrt(n) * mean) if n > 1 else np.full(mean.shape, np.nan)
    return np.log(mean) + np.squeeze(m, axis), se


def _rhat_max(tree: xr.DataTree) -> float | None:
    """The largest R-hat of x⁰ over its coordinates; clamped (constant) coordinates have none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = azs.rhat(tree, var_names=["x0"])["x0"].values
    return float(np.nanmax(rhat)) if np.isfinite(rhat).any() else None


def _resample_equal(key: PRNGKeyArray, out: smc.SMCOutput, joint: bool):
    idx = smc.resample_indices(key, out.log_weights, joint)
    return smc.gather((out.x0, out.latents), idx, out.x0.shape[1])


def _run_smc(log_r, key, method, num_particles, num_chains, intermediate, curvature, resample_below):
    exact = method == "smc"

    @jax.jit
    def one(k):
        k_run, k_draw = jax.random.split(k)
        out = smc.run(
            log_r,
            k_run,
            num_particles,
            resample=exact,
            resample_below=resample_below,
            intermediate=intermediate,
            curvature=curvature,
        )
        draws = _resample_equal(k_draw, out, log_r.joint) if exact else (out.x0, out.latents)
        return out, draws

    outs, (x0, latents) = jax.vmap(one)(jax.random.split(key, num_chains))
    nan = np.asarray(outs.nan_count)
    if nan.any():
        step, datum = np.argwhere(nan.max(0))[0]
        raise QueryError(
            f"The query's log r(x⁰) was NaN for {int(nan.sum())} particle steps (first at step "
            f"{log_r.diffusion.num_steps - int(step)} of the reverse chain, datum {int(datum)}; sites "
            f"{log_r.observed}). log r must be finite or −inf everywhere x⁰ can go."
        )
    return outs, np.asarray(x0), {k: np.asarray(v) for k, v in latents.items()}


def _smc_tree(log_r, outs, x0, latents, observations):
    diffusion = log_r.diffusion
    dims = ["chain", "draw", "datum", *_event_dims(diffusion)]
    post = {"x0": (dims, x0)}
    for name, v in latents.items():
        post[name] = (["chain", "draw"] + [f"{name}_dim_{i}" for i in range(v.ndim - 2)], v)
    T = diffusion.num_steps
    stats = {
        "ess": (["chain", "step", "datum"], np.asarray(outs.ess)),
        "resampled": (["chain", "step", "datum"], np.asarray(outs.resampled)),
        "log_Z": (["chain", "datum"], np.asarray(outs.log_Z)),
        "log_weight": (["chain", "draw", "datum"], np.asarray(outs.log_weights)),
    }
    step_coord = {"step": np.arange(T, -1, -1)}  # the state each step produced: x^T … x⁰
    return xr.DataTree.from_dict(
        {
            "posterior": xr.Dataset(post),
            "sample_stats": xr.Dataset(stats, coords=step_coord),
            "observed_data": _observed(observations),
        }
    )


def _observed(observations: dict) -> xr.Dataset:
    out = {}
    for name, v in observations.items():
        v = np.asarray(v)
        if v.dtype.kind in "biuf":
            out[name] = ([f"{name}_dim_{i}" for i in range(v.ndim)], v)
    return xr.Dataset(out)


def _nuts(log_r, key, num_chains, num_samples, num_warmup, progress):
    if not isinstance(log_r.diffusion.family, GaussianFamily):
        raise QueryError("method='nuts' needs continuous states; for binomial diffusion use method='smc'.")
    if log_r.clamp is not None:
        raise QueryError(
            "method='nuts' cannot sample under `observe_exactly` (a delta has no gradient); use method='smc' "
            "(exact clamping) or a Normal observation with a small scale."
        )

    def model():
        log_r.query(log_r.diffusion, **log_r.observations)

    mcmc = MCMC(
        NUTS(model, init_strategy=init_to_sample, target_accept_prob=0.9),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=progress,
    )
    mcmc.run(key, extra_fields=("diverging",))
    samples = mcmc.get_samples(group_by_chain=True)
    return samples, np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])


def _nuts_tree(log_r, samples, diverging, observations):
    diffusion = log_r.diffusion
    post = {"x0": (["chain", "draw", "datum", *_event_dims(diffusion)], np.asarray(samples[X0]))}
    for name in log_r.latents:
        v = np.asarray(samples[name])
        post[name] = (["chain", "draw"] + [f"{name}_dim_{i}" for i in range(v.ndim - 2)], v)
    return xr.DataTree.from_dict(
        {
            "posterior": xr.Dataset(post),
            "sample_stats": xr.Dataset({"diverging": (["chain", "draw"], diverging)}),
            "observed_data": _observed(observations),
        }
    )


def posterior(
    query: QueryModel,
    model: AbstractDiffusion | str | Path,
    observations: dict,
    *,
    key: PRNGKeyArray,
    method: Method = "smc",
    num_particles: int = 1_000,
    num_chains: int = 4,
    num_samples: int = 500,
    num_warmup: int = 500,
    intermediate: smc.Intermediate | None = None,
    curvature: bool = True,
    resample_below: float = 0.5,
    progress: bool = True,
) -> Posterior:
    """Sample p̃(x⁰) ∝ p(x⁰)·r(x⁰) for the query ``query(model, **observations)``.

    **Arguments:**

    - `query`: a NumPyro model that calls ``model.prior((B,))`` and observes the x⁰ it returns.
    - `model`: a trained model — a run folder written by ``dpm fit``, or a `bind`-frozen or
      fixed-kernel diffusion.
    - `observations`: the query's keyword arguments (observed data).
    - `key`: the PRNG key.
    - `method`: ``"perturbed"``, ``"smc"`` or ``"nuts"`` (module docstring).
    - `num_particles`: particles per run and datum (perturbed, smc).
    - `num_chains`: independent runs (perturbed, smc: the spread of log Z gives its standard error)
      or NUTS chains.
    - `num_samples`, `num_warmup`: NUTS draws and warm-up per chain.
    - `intermediate`: r along the chain: ``"constant"`` (Eq 16; the perturbed default),
      ``"annealed"`` (Eq 23; the smc default) or ``"signal"`` (r^{ᾱ_t}).
    - `curvature`: the perturbed kernel's separable second-order term (exact for Gaussian r); False
      gives the paper's Eq 61 alone.
    - `resample_below`: smc resamples when ESS < this × ``num_particles``.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    if isinstance(model, (str, Path)):
        from .run import load_run

        model = load_run(model).diffusion
    if not isinstance(model, AbstractDiffusion):
        raise TypeError(f"`model` must be a dpm_ppl diffusion model, got {type(model).__name__}.")
    if model.trainable and model.kernel is None:
        raise ValueError("Query a trained model: `model.bind(params)` or `dpm_ppl.run.load_run(dir).diffusion`.")
    num_chains = _positive("num_chains", num_chains)
    if intermediate is None:
        intermediate = "constant" if method == "perturbed" else "annealed"
    if intermediate not in ("constant", "annealed", "signal"):
        raise ValueError(f"`intermediate` must be 'constant', 'annealed' or 'signal', got {intermediate!r}.")
    if not 0.0 <= resample_below <= 1.0:
        raise ValueError(f"`resample_below` must lie in [0, 1], got {resample_below!r}.")
    k_check, k_run = jax.random.split(key)
    log_r = LogR(query, model, observations, k_check)
    t0 = time.perf_counter()
    if method == "nuts":
        samples, diverging = _nuts(
            log_r,
            k_run,
            num_chains,
            _positive("num_samples", num_samples),
            _positive("num_warmup", num_warmup),
            progress,
        )
        seconds = time.perf_counter() - t0
        tree = _nuts_tree(log_r, samples, diverging, observations)
        ess = azs.ess(tree, var_names=["x0"])["x0"].values
        return Posterior(method, tree, None, None, float(np.min(ess)), None, _rhat_max(tree), seconds)

    num_particles = _positive("num_particles", num_particles)
    outs, x0, latents = _run_smc(
        log_r, k_run, method, num_particles, num_chains, intermediate, curvature, resample_below
    )
    seconds = time.perf_counter() - t0
    tree = _smc_tree(log_r, outs, x0, latents, observations)
    log_Z, log_Z_se = _log_mean_exp(np.asarray(outs.log_Z, np.float64), axis=0)
    khat = psis_khat(np.moveaxis(np.asarray(outs.log_weights), 1, -1))  # (chain, datum)
    rhat = _rhat_max(tree) if num_chains > 1 else None
    return Posterior(method, tree, log_Z, log_Z_se, float(np.min(outs.ess)), _nanmax(khat), rhat, seconds, khat)


def _nanmax(x: np.ndarray) -> float | None:
    return float(np.nanmax(x)) if np.isfinite(x).any() else None
