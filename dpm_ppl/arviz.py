"""ArviZ DataTrees (`xarray.DataTree`, ArviZ 1.x's data model) of what dpm_ppl computes, written to netCDF.

`fit_datatree`, a trained model:

- ``prior_predictive``: samples x⁰ ~ p(x⁰) from the trained model, dims (chain, draw, dim);
- ``observed_data``: the held-out data;
- ``bound``: the bound's terms per held-out example, in bits (dims: datum);
- ``training``: the training trace (loss in bits per example by step; held-out K by step);
- ``schedule``: β_t by t.

`likelihood_datatree`, an importance-sampled likelihood, whose ``log_likelihood`` group `elpd` turns into the
`arviz_stats.ELPDData` that `arviz_stats.compare` ranks. Posterior queries carry their own DataTree
(`dpm_ppl.Posterior.tree`).
"""

from __future__ import annotations

from typing import cast

import numpy as np
import xarray as xr
from arviz_stats import ELPDData, loo

from ._model import X0
from .infer._likelihood import LikelihoodEstimate


__all__ = ["elpd", "fit_datatree", "likelihood_datatree"]


def fit_datatree(
    samples: np.ndarray,
    held_out: np.ndarray,
    bound_bits: dict[str, np.ndarray],
    history: dict,
    betas: np.ndarray,
) -> xr.DataTree:
    """Collect a fit's samples, data, per-example bound, training trace and schedule in one DataTree."""
    samples, held_out = (np.reshape(a, (len(a), -1)) for a in (samples, held_out))
    groups = {
        "prior_predictive": xr.Dataset({"x0": (("chain", "draw", "dim"), samples[None])}),
        "observed_data": xr.Dataset({"x0": (("datum", "dim"), held_out)}),
        "bound": xr.Dataset({name: (("datum",), np.asarray(v)) for name, v in bound_bits.items()}),
        "training": xr.Dataset(
            {
                "loss_bits": (("step",), np.asarray(history["loss_bits"])),
                "heldout_K_bits": (("eval_step",), np.asarray(history["eval_K_bits"])),
            },
            coords={"step": np.asarray(history["step"]), "eval_step": np.asarray(history["eval_step"])},
        ),
        "schedule": xr.Dataset({"beta": (("t",), np.asarray(betas))}, coords={"t": np.arange(1, len(betas) + 1)}),
    }
    groups["bound"].attrs["units"] = "bits per example"
    return xr.DataTree.from_dict({f"/{name}": ds for name, ds in groups.items()})


def likelihood_datatree(estimate: LikelihoodEstimate, x0: np.ndarray | None = None) -> xr.DataTree:
    """An ArviZ DataTree of the per-datum estimate.

    - ``log_likelihood``: variable ``"x0"`` (the model's observed site), log p̂ in nats, dims
      (chain = 1, draw = 1, datum): the trained model is a point estimate, so there is one "draw".
    - ``sample_stats``: ``khat``, ``ess``, ``stderr`` (nats) and ``K`` (nats) by datum.
    - ``observed_data``: the data, dims (datum, dim), when ``x0`` is given.

    `elpd` turns it into an `arviz_stats.ELPDData` for `arviz_stats.compare`.
    """
    n = len(estimate.log_p_hat)
    groups = {
        "log_likelihood": xr.Dataset({X0: (("chain", "draw", "datum"), np.asarray(estimate.log_p_hat)[None, None])}),
        "sample_stats": xr.Dataset(
            {name: (("datum",), np.asarray(getattr(estimate, name))) for name in ("khat", "ess", "stderr", "K")}
        ),
    }
    if x0 is not None:
        flat = np.asarray(x0).reshape(n, -1)
        groups["observed_data"] = xr.Dataset({X0: (("datum", "dim"), flat)})
    for ds in groups.values():
        ds.coords["datum"] = np.arange(n)
    groups["log_likelihood"].attrs.update(units="nats", estimator="importance sampling over forward trajectories")
    groups["sample_stats"].attrs.update(num_trajectories=estimate.num_trajectories, dim=estimate.dim)
    return xr.DataTree.from_dict({f"/{name}": ds for name, ds in groups.items()})


def elpd(tree: xr.DataTree) -> ELPDData:
    """The held-out log predictive density Σᵢ log p̂(xᵢ) as an `ELPDData` that `arviz_stats.compare` ranks.

    Runs `arviz_stats.loo` on the single-draw ``log_likelihood`` group with zero log weights
    (the model is a point estimate and the data are held out, so nothing is left out) and the
    importance-sampling k̂ as each datum's Pareto k: elpd_i = log p̂(xᵢ), se = √N·sd(elpd_i), and
    loo warns when some k̂ > 0.7. ``arviz_stats.loo(tree)`` itself would try PSIS on one draw.
    """
    zeros = xr.zeros_like(cast(xr.DataArray, tree["log_likelihood"][X0]))  # a variable of the group
    khat = tree["sample_stats"]["khat"]  # NaN (undefined) counts as neither good nor bad
    # arviz_stats.loo is unannotated: its inferred result mixes in internal tuples
    return cast(ELPDData, loo(tree, pointwise=True, var_name=X0, reff=1.0, log_weights=zeros, pareto_k=khat))
