"""Query scripts: a file in ``inference/`` declares ONE `QueryScript` named ``query``.

A query script names the NumPyro query model, how to build its observations from a trained run (for
example, noisy copies of held-out data), the default sampler, and optionally a score of the result
against the truth it hid, an answer to report and figures of its own. ``dpm query SCRIPT --run RUN``
(`run_query`) samples the posterior, prints its `arviz_stats.summary` and writes into the output folder,
in this order (so that a failing figure never loses a finished query):

    posterior.nc   the ArviZ DataTree (posterior x0 in data units, sample_stats, observed_data, standardiser)
    query.json     sampler, log_Z (per datum, nats) and log_Z_stderr, log_Z_ci95, ess_min, khat (max),
                   khat_frac_over_0p7, rhat_max, seconds, warnings; the script's `answer` (e.g. posterior
                   intervals) and, when the truth is known, its `score`; figure_errors if a figure failed
    posterior.png  the observations, the hidden truth and the posterior draws (hidden entries not drawn)
    ess.png        SMC: the effective sample size along the reverse chain (perturbed: of its weights)
    rank.png       NUTS: rank plots of the first data's x⁰ across chains (arviz-plots)
    ...            the script's own figures (e.g. intervals.png of inference/impute.py)

Queries live in the data's units. The run's standardiser (z = (x − shift)/scale, `LoadedRun.split`) is
applied inside the query model (`dpm_ppl.in_data_units`): ``diffusion.prior(...)`` returns x⁰ in the
units of the data the run was trained on, so ``Normal(x0, 0.1)`` is a noise of 0.1 in those units. A
script's `observe` builds data-unit observations (e.g. from ``run.split.standardiser.inverse(run.split.test)``),
its `score`, `answer` and `figures` get data-unit draws, and the figures are drawn in data units. Binary
runs have the identity standardiser.

``dpm query SCRIPT --run RUN --observations FILE`` conditions on your own observations instead of the
script's `observe` (no truth, so no score): an ``.npz`` of arrays named after the query model's keyword
arguments, or a ``.csv``/``.npy`` table passed as its single observation argument, in data units (NaN
where the script gives it a meaning, e.g. missing entries in inference/impute.py). They are checked
against the query model before any sampling (`check_observations`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, cast

import jax
import numpy as np

from .. import plots
from ..datasets._files import read_csv
from ..infer._posterior import Posterior, posterior
from ..infer._query import QueryModel
from ..infer.samplers import SAMPLERS, SMC, AbstractSampler
from ._json import write_json
from ._modules import import_script
from ._report import modality
from ._run import LoadedRun, load_run
from ._table import print_table


__all__ = ["Observed", "QueryScript", "load_observations", "load_query", "run_query"]


class Observed(NamedTuple):
    """The observations a query is conditioned on (data units), and the truth they were made from (if known)."""

    observations: dict
    truth: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class QueryScript:
    """What a query script declares. Everything it sees and returns is in data units.

    - `name`: a short name (the default output folder is ``RUN/query_<name>``).
    - `model`: the NumPyro query ``model(diffusion, **observations)`` (`dpm_ppl.infer`); its
      ``diffusion.prior(...)`` returns x⁰ in data units.
    - `observe`: ``observe(run, key, num_data) -> Observed``, the observations built from a trained run
      (not called with ``--observations``).
    - `sampler`: the default sampler with its options (`dpm_ppl.SMC`, `dpm_ppl.NUTS`, `dpm_ppl.Perturbed`).
    - `num_data`: how many data to query by default.
    - `score`: ``score(run, observed, x0_draws) -> dict`` of numbers added to ``query.json`` as ``score``;
      called only when the truth is known (``observed.truth`` is not None).
    - `answer`: ``answer(run, observed, x0_draws) -> dict``, what the query found (JSON-ready numbers,
      strings and lists, e.g. posterior intervals), added to ``query.json`` as ``answer`` and printed.
    - `figures`: ``figures(run, observed, x0_draws, out)`` writes the script's own figures into ``out``.

    ``x0_draws`` has shape (chain, draw, datum, *event).
    """

    name: str
    model: QueryModel
    observe: Callable[[LoadedRun, jax.Array, int], Observed]
    sampler: AbstractSampler = dataclasses.field(default_factory=SMC)
    num_data: int = 100
    score: Callable[[LoadedRun, Observed, np.ndarray], dict] | None = None
    answer: Callable[[LoadedRun, Observed, np.ndarray], dict] | None = None
    figures: Callable[[LoadedRun, Observed, np.ndarray, Path], None] | None = None

    def __post_init__(self):
        if not isinstance(self.sampler, AbstractSampler):
            raise TypeError(f"`sampler` must be a dpm_ppl sampler such as dpm_ppl.SMC(...), got {self.sampler!r}.")
        if not callable(self.model) or not callable(self.observe):
            raise TypeError("`model` and `observe` must be callables (see inference/denoise_swiss_roll.py).")
        for name in ("score", "answer", "figures"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise TypeError(f"`{name}` must be a callable or None.")


def load_query(path: str | Path) -> QueryScript:
    """Import a query script from its path and return its ``query``."""
    module = import_script(Path(path), "query", "inference/ (e.g. inference/denoise_swiss_roll.py)")
    query = getattr(module, "query", None)
    if not isinstance(query, QueryScript):
        raise ValueError(
            f"{str(path)!r} declares no `query = dpm_ppl.QueryScript(...)`; a query script must define "
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


# -- your own observations ---------------------------------------------------------------------


def _arguments(model: QueryModel) -> tuple[list[str], list[str]]:
    """The query model's observation arguments (all after ``diffusion``) and those without a default."""
    params = list(inspect.signature(model).parameters.values())[1:]
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [p.name for p in params if p.name in names and p.default is inspect.Parameter.empty]
    return names, required


def _as_observation(name: str, v: np.ndarray, path: Path) -> np.ndarray:
    v = np.asarray(v)
    if v.dtype.kind not in "biuf":
        raise ValueError(
            f"observation `{name}` in {str(path)!r} has dtype {v.dtype}; observations must be numbers (or booleans)."
        )
    return v.astype(np.float32) if v.dtype.kind == "f" else v


def load_observations(path: str | Path, model: QueryModel, column_names: list[str] | None = None) -> dict:
    """Read ``--observations FILE`` for the query ``model`` (data units).

    - ``.npz``: arrays named after the model's keyword arguments (every argument without a default;
      others optional).
    - ``.csv`` (or ``.npy``): one table, passed as the model's single observation argument; a CSV header,
      when the run knows its columns' names, must name the same columns (reordered to the run's order if
      it names them in another).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No observations file at {str(path)!r}.")
    names, required = _arguments(model)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        unknown = sorted(set(arrays) - set(names))
        missing = [k for k in required if k not in arrays]
        if unknown or missing:
            parts = []
            if missing:
                parts.append(f"it lacks {missing}")
            if unknown:
                parts.append(f"the query takes no {unknown}")
            raise ValueError(
                f"The observations file {str(path)!r} holds arrays {sorted(arrays)} but the query model takes "
                f"{names} ({'; '.join(parts)}). Name each array after a keyword argument of the query model: "
                f"np.savez(path, {', '.join(f'{k}=...' for k in required)})."
            )
        return {k: _as_observation(k, v, path) for k, v in arrays.items()}
    if path.suffix not in (".csv", ".npy"):
        raise ValueError(
            f"The observations file must be .npz (arrays named after the query's arguments), .csv or .npy (one "
            f"table), got {str(path)!r}."
        )
    if len(names) != 1:
        raise ValueError(
            f"A {path.suffix} file gives one table, but the query model takes {len(names)} observation arguments "
            f"{names}: save them in an .npz with one array per argument (np.savez(path, "
            f"{', '.join(f'{k}=...' for k in names)}))."
        )
    if path.suffix == ".npy":
        table = np.load(path, allow_pickle=False)
    else:
        table, header = read_csv(path, missing=True, what="observations file")
        table, header = table.astype(np.float32), None if header is None else list(header)
        if header is not None and column_names is not None and header != list(column_names):
            if sorted(header) == sorted(column_names):
                table = table[:, [header.index(c) for c in column_names]]
            else:
                raise ValueError(
                    f"The observations file {str(path)!r} names the columns {header}, but the run was trained on "
                    f"{list(column_names)}; give the same columns (in any order)."
                )
    return {names[0]: _as_observation(names[0], table, path)}


# -- dpm query -----------------------------------------------------------------------------------


def run_query(
    script: str | Path,
    run: str | Path | LoadedRun,
    out: str | Path | None = None,
    *,
    method: str | None = None,
    num_data: int | None = None,
    seed: int = 0,
    progress: bool = True,
    observations: str | Path | dict | None = None,
    **options,
) -> tuple[Posterior, dict]:
    """``dpm query``: sample a query script's posterior on a trained run; write and print the results.

    ``run`` is a run folder or an already loaded `LoadedRun` (then give ``out``). ``observations`` is a
    file (`load_observations`) or a dict of arrays, in data units, used instead of the script's
    `observe` (no truth, no score). The observations are checked against the query model before any
    sampling; the draws (``Posterior.x0``) are in data units.
    """
    query = load_query(script)
    if isinstance(run, LoadedRun):
        loaded, run_name = run, run.info.get("path") if isinstance(run.info, dict) else None
        if out is None:
            raise ValueError("Give `out` when `run` is a LoadedRun (there is no run folder to write into).")
    else:
        loaded, run_name = load_run(run), str(Path(run).resolve())
    # a LoadedRun comes with `out` (refused above without it), so here `run` is a path
    out = Path(out) if out is not None else Path(cast(str | Path, run)) / f"query_{query.name}"
    standardiser = loaded.split.standardiser
    column_names = getattr(loaded.experiment.data, "column_names", None)
    key = jax.random.key(seed)
    k_obs, k_post = jax.random.split(key)
    if observations is not None:
        if num_data is not None:
            raise ValueError("`num_data` (--num-data) does not apply with observations: the file gives the data.")
        if isinstance(observations, dict):
            given, source = dict(observations), "given"
        else:
            given, source = load_observations(observations, query.model, column_names), str(Path(observations))
        observed = Observed(given, None)
    else:
        observed, source = query.observe(loaded, k_obs, num_data or query.num_data), None
    sampler = choose_sampler(query.sampler, method, **options)
    result = posterior(  # checks the observations against the query model before sampling
        query.model,
        loaded.diffusion,
        observed.observations,
        key=k_post,
        sampler=sampler,
        progress=progress,
        standardiser=standardiser,
    )
    out.mkdir(parents=True, exist_ok=True)  # only now: an interrupted query leaves no empty folder behind
    result.tree.to_netcdf(out / "posterior.nc", engine="h5netcdf")
    draws = result.x0  # data units
    report = {"script": str(Path(script).resolve()), "run": run_name, "observations": source, **result.report()}
    problems = []
    if query.answer is not None:
        report["answer"] = _guarded("answer", problems, query.answer, loaded, observed, draws)
    if query.score is not None and observed.truth is not None:
        score_fn = query.score

        def score():
            return {k: float(v) for k, v in score_fn(loaded, observed, draws).items()}

        if (numbers := _guarded("score", problems, score)) is not None:
            report["score"] = numbers
    if problems:
        report["errors"] = problems
    write_json(out / "query.json", report)
    figures = []
    raw_test = np.asarray(standardiser.inverse(loaded.split.test))
    plot = functools.partial(
        plots.plot_posterior, modality=modality(loaded.experiment, loaded.diffusion), names=column_names
    )
    _guarded(
        "posterior.png", figures, plot, observed.observations, observed.truth, draws, raw_test, out / "posterior.png"
    )
    if result.sampler == "nuts":
        _guarded("rank.png", figures, plots.plot_rank, result.tree, out / "rank.png")
    else:
        _guarded("ess.png", figures, plots.plot_ess, result.tree, out / "ess.png")
    if query.figures is not None:
        _guarded("the script's figures", figures, query.figures, loaded, observed, draws, out)
    if figures:
        report["figure_errors"] = figures
        write_json(out / "query.json", report)
    _guarded("printing the summary", [], _print, report, result)
    return result, report


def _guarded(what: str, errors: list, fn, *args):
    """``fn(*args)``, or None with a warning when it raises: nothing after sampling may lose the posterior."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - reported, not raised: posterior.nc is written already
        note = f"{what} failed: {type(err).__name__}: {err}"
        errors.append(note)
        warnings.warn(f"{note} (posterior.nc is written; the query's results are kept)", RuntimeWarning, stacklevel=2)
        return None


def _print(report: dict, result: Posterior) -> None:
    print(f"{report['sampler']}: {result.seconds:.1f} s")
    if report["log_Z"] is not None:
        lz, se = np.asarray(report["log_Z"], float), np.asarray(report["log_Z_stderr"], float)
        print(
            f"  log Z = log E_p[r(x⁰)]: mean over data {np.nanmean(lz):.3f} nats (median stderr {np.nanmedian(se):.3f})"
        )

    def fmt(x):
        return "—" if x is None else f"{x:.3f}"

    print(
        f"  ESS min {fmt(report['ess_min'])}   PSIS k̂ max {fmt(report['khat'])} "
        f"(> 0.7 for a fraction {fmt(report['khat_frac_over_0p7'])} of runs × data)   "
        f"R-hat max {fmt(report['rhat_max'])}"
    )
    for note in result.warnings:
        print(f"  warning: {note}")
    for note in report.get("errors", []) + report.get("figure_errors", []):
        print(f"  warning: {note}")
    for name, value in report.get("score", {}).items():
        print(f"  {name}: {value:.4f}")
    if report.get("answer"):
        _print_answer(report["answer"])
    summary = result.summary(kind="stats")
    print(summary.head(8).to_string() if hasattr(summary, "head") else summary)


def _print_answer(answer: dict, rows: int = 20) -> None:
    """Scalars as ``name: value``; a dict of equal-length lists as a table of its first ``rows`` rows."""

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    for name, value in answer.items():
        table = isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values())
        if table and len({len(v) for v in value.values()}) == 1:
            cols = list(value)
            n = len(value[cols[0]])
            body = [[cell(value[c][i]) for c in cols] for i in range(min(n, rows))]
            print(f"  {name}:")
            print_table([cols, *body], indent="    ", align="right")
            if n > rows:
                print(f"    … {n - rows} more in query.json")
        elif not isinstance(value, (dict, list)):
            print(f"  {name}: {cell(value)}")
