"""Query scripts: a file in ``inference/`` declares ONE `QueryScript` named ``query``.

A query script names the NumPyro query model, how to build its observations from a trained run (for
example, noisy copies of held-out data), the default sampler, and optionally a score of the result
against the truth it hid. ``dpm query SCRIPT --run RUN`` (`run_query`) samples the posterior, prints
its `arviz_stats.summary` and writes into the output folder:

    query.json     sampler, log_Z (per datum, nats) and log_Z_stderr, ess_min, khat (max), khat_frac_over_0p7,
                   rhat_max, seconds,
                   and the script's scores
    posterior.nc   the ArviZ DataTree (posterior, sample_stats, observed_data)
    posterior.png  the observations, the hidden truth and the posterior draws
    ess.png        SMC: the effective sample size along the reverse chain (perturbed: of its weights)
    rank.png       NUTS: rank plots of the first data's x⁰ across chains (arviz-plots)

Queries live in the model's units (standardised data for Gaussian models: `LoadedRun.split`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from . import diagnostics
from .posterior import Posterior, posterior
from .query import QueryModel
from .run import LoadedRun, _write_json, load_run
from .samplers import SAMPLERS, SMC, AbstractSampler


__all__ = ["Observed", "QueryScript", "load_query", "run_query"]


class Observed(NamedTuple):
    """The observations a query is conditioned on, and the truth they were made from (if known)."""

    observations: dict
    truth: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class QueryScript:
    """What a query script declares.

    - `name`: a short name (the default output folder is ``RUN/query_<name>``).
    - `model`: the NumPyro query ``model(diffusion, **observations)`` (`dpm_ppl.query`).
    - `observe`: ``observe(run, key, num_data) -> Observed``, the observations built from a trained run.
    - `sampler`: the default sampler with its options (`dpm_ppl.SMC`, `dpm_ppl.NUTS`, `dpm_ppl.Perturbed`).
    - `num_data`: how many data to query by default.
    - `score`: ``score(run, observed, x0_draws) -> dict`` of numbers added to ``query.json``.
    """

    name: str
    model: QueryModel
    observe: Callable[[LoadedRun, jax.Array, int], Observed]
    sampler: AbstractSampler = dataclasses.field(default_factory=SMC)
    num_data: int = 100
    score: Callable[[LoadedRun, Observed, np.ndarray], dict] | None = None

    def __post_init__(self):
        if not isinstance(self.sampler, AbstractSampler):
            raise TypeError(f"`sampler` must be a dpm_ppl sampler such as dpm_ppl.SMC(...), got {self.sampler!r}.")
        if not callable(self.model) or not callable(self.observe):
            raise TypeError("`model` and `observe` must be callables (see inference/denoise_swiss_roll.py).")


def load_query(path: str | Path) -> QueryScript:
    """Import a query script from its path and return its ``query``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No query script at {str(path)!r}. The scripts shipped are in inference/ "
            "(e.g. inference/denoise_swiss_roll.py)."
        )
    spec = importlib.util.spec_from_file_location(f"_dpm_query_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{str(path)!r} is not a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    query = getattr(module, "query", None)
    if not isinstance(query, QueryScript):
        raise ValueError(
            f"{str(path)!r} declares no `query = dpm_ppl.query_script.QueryScript(...)`; a query script must define "
            "one (see inference/denoise_swiss_roll.py)."
        )
    return query


def choose_sampler(default: AbstractSampler, method: str | None = None, **options) -> AbstractSampler:
    """The script's sampler, or a fresh one of class ``method`` (a name of `SAMPLERS`), with the given
    options (those that are not None) replacing its own; options the sampler does not have are ignored."""
    if method is not None and method not in SAMPLERS:
        raise ValueError(f"`method` must be one of {sorted(SAMPLERS)}, got {method!r}.")
    sampler = default if method in (None, default.name) else SAMPLERS[method]()
    names = {f.name for f in dataclasses.fields(sampler)}
    chosen = {k: v for k, v in options.items() if v is not None and k in names}
    return dataclasses.replace(sampler, **chosen) if chosen else sampler


def run_query(
    script: str | Path,
    run: str | Path,
    out: str | Path | None = None,
    *,
    method: str | None = None,
    num_data: int | None = None,
    seed: int = 0,
    progress: bool = True,
    **options,
) -> tuple[Posterior, dict]:
    """``dpm query``: sample a query script's posterior on a trained run; write and print the results."""
    query = load_query(script)
    loaded = load_run(run)
    out = Path(out) if out is not None else Path(run) / f"query_{query.name}"
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(seed)
    k_obs, k_post = jax.random.split(key)
    observed = query.observe(loaded, k_obs, num_data or query.num_data)
    result = posterior(
        query.model,
        loaded.diffusion,
        observed.observations,
        key=k_post,
        sampler=choose_sampler(query.sampler, method, **options),
        progress=progress,
    )
    report = {"script": str(Path(script).resolve()), "run": str(Path(run).resolve()), **result.report()}
    if query.score is not None:
        report["score"] = {k: float(v) for k, v in query.score(loaded, observed, result.x0).items()}
    result.tree.to_netcdf(out / "posterior.nc", engine="h5netcdf")
    raw = loaded.split.standardiser.inverse  # figures in data units
    shown = Observed(
        {k: raw(v) if k == "y" else v for k, v in observed.observations.items()},
        None if observed.truth is None else raw(observed.truth),
    )
    diagnostics.plot_posterior(shown, raw(result.x0), raw(loaded.split.test), out / "posterior.png")
    if result.sampler == "nuts":
        diagnostics.plot_rank(result.tree, out / "rank.png")
    else:
        diagnostics.plot_ess(result.tree, out / "ess.png")
    _write_json(out / "query.json", report)
    _print(report, result)
    return result, report


def _print(report: dict, result: Posterior) -> None:
    print(f"{report['sampler']}: {result.seconds:.1f} s")
    if report["log_Z"] is not None:
        lz, se = np.asarray(report["log_Z"]), np.asarray(report["log_Z_stderr"])
        print(f"  log Z = log E_p[r(x⁰)]: mean over data {lz.mean():.3f} nats (median stderr {np.median(se):.3f})")

    def fmt(x):
        return "—" if x is None else f"{x:.3f}"

    print(
        f"  ESS min {report['ess_min']:.1f}   PSIS k̂ max {fmt(report['khat'])} "
        f"(> 0.7 for a fraction {fmt(report['khat_frac_over_0p7'])} of runs × data)   "
        f"R-hat max {fmt(report['rhat_max'])}"
    )
    for note in result.warnings:
        print(f"  warning: {note}")
    for name, value in report.get("score", {}).items():
        print(f"  {name}: {value:.4f}")
    summary = result.summary(kind="stats")
    print(summary.head(8).to_string() if hasattr(summary, "head") else summary)
