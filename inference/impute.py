"""Impute missing entries: observe the given entries of each row exactly, infer the missing ones.

r(x⁰) = δ(x⁰_S − y_S) on the entries S that are given (`observe_exactly`; NaN marks a missing entry), so
the posterior of the missing entries is the trained model's conditional p(x⁰_H | x⁰_S = y_S), sampled by
SMC with the observed entries clamped. Everything is in the data's units (the run's standardiser is
applied inside the query: `dpm_ppl.in_data_units`); log Z is log p(x⁰_S = y_S) per row, a density
in data units.

    dpm fit models/tabular.py --data mydata.csv
    dpm query inference/impute.py --run runs/tabular_mydata --observations incomplete.csv

``incomplete.csv`` has the training file's columns (a header, if any, with the same names) and an empty
cell (or nan) for each missing entry. Without ``--observations`` the query hides a random 30% of the
entries of held-out rows, and scores itself against them.

Answer (query.json ``answer`` and printed): for each missing entry its row, column, posterior mean and
the 5%, 50% and 95% posterior quantiles (a 90% interval); figure ``intervals.png``. Score (demo only):
the coverage of the 90% intervals, the RMSE of the posterior mean and, for comparison, of each column's
training mean (in data units, and in units of each column's training sd).
"""

import jax
import jax.numpy as jnp
import numpy as np

import dpm_ppl as dpm
from dpm_ppl import Observed, QueryError, QueryScript, observe_exactly, plots


HIDDEN_FRACTION = 0.3
LEVEL = 0.9
QUANTILES = (0.5 - LEVEL / 2, 0.5, 0.5 + LEVEL / 2)


def model(diffusion, y):
    known = ~jnp.isnan(y)
    if not isinstance(known, jax.core.Tracer):  # checked on the concrete observations, before any sampling
        if bool(known.all()):
            raise QueryError("No entry of `y` is missing (NaN): there is nothing to impute.")
        if not bool(known.any()):
            raise QueryError("Every entry of `y` is missing (NaN): give the entries you know.")
    x0 = diffusion.prior((y.shape[0],))
    observe_exactly("known", x0, y, known)


def observe(run, key, num_data):
    truth = run.split.standardiser.inverse(run.split.test[:num_data]).astype(np.float32)
    hidden = np.asarray(jax.random.uniform(key, truth.shape)) < HIDDEN_FRACTION
    if not hidden.any():
        hidden.flat[0] = True
    if hidden.all():
        hidden.flat[0] = False
    return Observed({"y": np.where(hidden, np.nan, truth).astype(np.float32)}, truth)


def _names(run, d):
    names = getattr(run.experiment.data, "column_names", None)
    return list(names) if names is not None and len(names) == d else [f"column {j}" for j in range(d)]


def _hidden(observed):
    y = np.asarray(observed.observations["y"])
    flat = y.reshape(len(y), -1)
    rows, cols = np.nonzero(np.isnan(flat))
    return rows, cols


def _intervals(run, observed, draws):
    rows, cols = _hidden(observed)
    flat = draws.reshape(draws.shape[0] * draws.shape[1], draws.shape[2], -1)[:, rows, cols]  # (draws, hidden)
    lower, median, upper = np.quantile(flat, QUANTILES, axis=0)
    names = _names(run, draws.reshape(draws.shape[:3] + (-1,)).shape[-1])
    return {
        "row": rows.tolist(),
        "column": cols.tolist(),
        "name": [names[j] for j in cols],
        "mean": flat.mean(0).tolist(),
        "lower": lower.tolist(),
        "median": median.tolist(),
        "upper": upper.tolist(),
    }


def answer(run, observed, draws):
    intervals = _intervals(run, observed, draws)
    return {"level": LEVEL, "num_missing": len(intervals["row"]), "intervals": intervals}


def score(run, observed, draws):
    rows, cols = _hidden(observed)
    truth = observed.truth.reshape(len(observed.truth), -1)[rows, cols]
    flat = draws.reshape(draws.shape[0] * draws.shape[1], draws.shape[2], -1)[:, rows, cols]
    lower, upper = np.quantile(flat, (QUANTILES[0], QUANTILES[2]), axis=0)
    train = run.split.standardiser.inverse(run.split.train).reshape(len(run.split.train), -1)
    train_mean, train_sd = train.mean(0)[cols], train.std(0)[cols]
    train_sd = np.where(train_sd > 0, train_sd, 1.0)
    error, baseline = flat.mean(0) - truth, train_mean - truth
    return {
        "coverage_90": np.mean((truth >= lower) & (truth <= upper)),
        "rmse_posterior_mean": np.sqrt(np.mean(error**2)),
        "rmse_training_mean": np.sqrt(np.mean(baseline**2)),
        # the same in units of each column's training sd, so that no column dominates by its units
        "rmse_sd_posterior_mean": np.sqrt(np.mean((error / train_sd) ** 2)),
        "rmse_sd_training_mean": np.sqrt(np.mean((baseline / train_sd) ** 2)),
        "num_missing": float(len(rows)),
    }


def figures(run, observed, draws, out):
    intervals = dict(_intervals(run, observed, draws), level=LEVEL)
    truth = None
    if observed.truth is not None:
        rows, cols = _hidden(observed)
        truth = observed.truth.reshape(len(observed.truth), -1)[rows, cols]
    d = draws.reshape(draws.shape[:3] + (-1,)).shape[-1]
    plots.plot_intervals(intervals, out / "intervals.png", truth=truth, names=_names(run, d))


query = QueryScript(
    name="impute",
    model=model,
    observe=observe,
    sampler=dpm.SMC(num_particles=1_000, num_runs=4),
    num_data=50,
    score=score,
    answer=answer,
    figures=figures,
)
