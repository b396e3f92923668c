"""``posterior(query, model, observations, sampler=...)``: sample p̃(x⁰) ∝ p(x⁰)·r(x⁰) (paper §2.5).

The query is an ordinary NumPyro model (`dpm_ppl.query`); the sampler is one of the small classes
of `dpm_ppl.samplers`, which own their options:

- `SMC` (default): twisted sequential Monte Carlo, exact as the particles grow, with log Z =
  log E_p[r(x⁰)] and its standard error over independent runs.
- `NUTS`: NumPyro's NUTS on the whitened noises that generate the trajectory; exact, with R-hat
  and ESS. Gaussian diffusion only.
- `Perturbed`: the paper's perturbed kernels (Eq 22); fast and biased, with its bias measured.

Every result is a `Posterior` holding an ArviZ DataTree.
"""

from __future__ import annotations

import warnings

import jax
from jaxtyping import PRNGKeyArray

from .model import AbstractDiffusion
from .query import LogR, QueryModel
from .samplers import SMC, AbstractSampler, Posterior


__all__ = ["Posterior", "posterior"]


def posterior(
    query: QueryModel,
    model: AbstractDiffusion,
    observations: dict,
    *,
    key: PRNGKeyArray,
    sampler: AbstractSampler | None = None,
    progress: bool = True,
) -> Posterior:
    """Sample p̃(x⁰) ∝ p(x⁰)·r(x⁰) for the query ``query(model, **observations)``.

    **Arguments:**

    - `query`: a NumPyro model that calls ``model.prior((B,))`` and observes the x⁰ it returns.
    - `model`: a trained model (`bind`-frozen, e.g. ``dpm_ppl.load_run(dir).diffusion``) or a
      fixed-kernel diffusion.
    - `observations`: the query's keyword arguments (observed data).
    - `key`: the PRNG key.
    - `sampler`: `dpm_ppl.SMC()` (default), `dpm_ppl.NUTS()` or `dpm_ppl.Perturbed()`, with their options.
    - `progress`: show progress bars.

    What the sampler finds doubtful about its own answer (heavy-tailed Ẑ over runs, k̂ > 0.7, R-hat
    above its threshold, divergences) is raised as a `RuntimeWarning` and kept in `Posterior.warnings`.
    """
    if not isinstance(model, AbstractDiffusion):
        raise TypeError(
            f"`model` must be a dpm_ppl diffusion model, got {type(model).__name__}; for a run folder pass "
            "`dpm_ppl.load_run(folder).diffusion`."
        )
    if model.trainable and model.kernel is None:
        raise ValueError("Query a trained model: `model.bind(params)` or `dpm_ppl.load_run(dir).diffusion`.")
    sampler = SMC() if sampler is None else sampler
    if not isinstance(sampler, AbstractSampler):
        raise TypeError(
            f"`sampler` must be a dpm_ppl sampler (dpm_ppl.SMC(...), dpm_ppl.NUTS(...), dpm_ppl.Perturbed(...)), "
            f"got {sampler!r}."
        )
    k_check, k_run = jax.random.split(key)
    log_r = LogR(query, model, observations, k_check)
    sampler.check(log_r)
    result = sampler.run(log_r, k_run, progress)
    for note in result.warnings:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    return result
