"""``posterior(query, model, observations, sampler=...)``: sample p̃(x⁰) ∝ p(x⁰)·r(x⁰) (paper §2.5).

The query is an ordinary NumPyro model (`dpm_ppl.infer`); the sampler is one of the small classes
of `dpm_ppl.infer.samplers`, which own their options:

- `SMC` (default): twisted sequential Monte Carlo, exact as the particles grow, with log Z =
  log E_p[r(x⁰)] and its standard error over independent runs.
- `NUTS`: NumPyro's NUTS on the whitened noises that generate the trajectory; exact, with R-hat
  and ESS. Gaussian diffusion only.
- `Perturbed`: the paper's perturbed kernels (Eq 22); fast and biased, with its bias measured.

Every result is a `Posterior` holding an ArviZ DataTree.

Units. Without `standardiser` a query sees x⁰ in the model's own units (for a trained run of real-valued
data, the standardised z = (x − shift)/scale of `LoadedRun.split`) and every result is in those units.
With ``standardiser=run.split.standardiser`` (what ``dpm query`` passes) the query sees x⁰ = z·scale + shift in
the data's units (`dpm_ppl.in_data_units`), the observations are in those units, and so is the result:
``Posterior.tree["posterior"]["x0"]`` (and `Posterior.x0`) hold data-unit draws beside the data-unit
``observed_data``, the posterior group's ``x0_units`` attribute says so, and the group ``standardiser``
holds the shift and scale that map them back to z. log Z is log ∫ p(z)·r(x⁰(z)) dz, the same number for
the same r whichever units it is written in, except that an exact observation's delta is a density in
the units it is stated in: in data units log Z is log p(x⁰_S = y_S) in data units, the model-unit
evidence minus Σ_S log scale.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import xarray as xr
from jaxtyping import PRNGKeyArray

from .._model import AbstractDiffusion
from .._warnings import DiagnosticWarning
from ._query import LogR, QueryModel, affine_map, check_observations, in_data_units, log_scale_sum
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
    standardiser=None,
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
    - `standardiser`: None (the query sees x⁰ in the model's units), or the affine map z = (x − shift)/scale
      the model was trained under (``run.split.standardiser``; ``scale`` a number or one per coordinate):
      the query then sees x⁰ in data units and the result is in data units (module docstring).

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
    if standardiser is not None:
        query = in_data_units(query, standardiser)
    check_observations(query, model, observations)
    k_check, k_run = jax.random.split(key)
    log_r = LogR(query, model, observations, k_check)
    sampler.check(log_r)
    result = sampler.run(log_r, k_run, progress)
    if standardiser is not None:
        result = _to_data_units(result, log_r, standardiser)
    for note in result.warnings:
        warnings.warn(note, DiagnosticWarning, stacklevel=2)
    return result


def _to_data_units(result: Posterior, log_r: LogR, standardiser) -> Posterior:
    """The draws as x⁰ = z·scale + shift, and log Z of an exact observation as a density in data units."""
    event_shape = tuple(log_r.diffusion.event_shape)
    shift, scale = affine_map(standardiser, event_shape)
    groups = {f"/{name}": node.to_dataset() for name, node in result.tree.children.items()}
    post = groups["/posterior"]
    x0 = post["x0"]
    post["x0"] = (x0.dims, (x0.values * scale + shift).astype(x0.dtype))
    post.attrs["x0_units"] = "data: x0 = z * scale + shift, with z in the model's units (group `standardiser`)"
    event_dims = list(x0.dims[3:])
    groups["/standardiser"] = xr.Dataset({"shift": (event_dims, shift), "scale": (event_dims, scale)})
    log_Z, stats = result.log_Z, groups.get("/sample_stats")
    if log_r.clamp is not None and log_Z is not None:
        shift_Z = log_scale_sum(standardiser, event_shape, log_r.clamp[0])  # (B,)
        if log_r.joint:
            shift_Z = np.full_like(shift_Z, shift_Z.sum())
        log_Z = np.asarray(log_Z) - shift_Z
        if stats is not None and "log_Z" in stats:
            stats["log_Z"] = (stats["log_Z"].dims, stats["log_Z"].values - shift_Z.astype(stats["log_Z"].dtype))
    return result._replace(tree=xr.DataTree.from_dict(groups), log_Z=log_Z)
