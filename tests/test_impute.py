"""inference/impute.py against a closed form: a Gaussian model whose columns are correlated.

The model's reverse kernels are linear-Gaussian, p(xᵗ⁻¹ | xᵗ) = N(M_t xᵗ + c_t, diag w_t) with full
matrices M_t (an oracle's kernels for Gaussian data in a rotated basis, their variances cut to the
diagonal), so p(x⁰) = N(μ₀, Σ₀) exactly, with Σ₀ found by pushing N(0, I) through the chain in float64:
Σ ← M Σ Mᵀ + diag w, then the fixed last step Σ₀ = (1 − β₁) Σ₁ + β₁ I. In data units x = z·scale + shift
(a per-column scale and a shift), the missing entries of a row given the observed ones follow the
conditional Gaussian of N(μ₀·scale + shift, diag(scale) Σ₀ diag(scale)), and log Z is the observed entries'
marginal density in data units. Tolerances are N_SE standard errors over independent SMC runs.
"""

import json
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from helpers import N_SE
from scipy import stats

import dpm_ppl as dpm
from dpm_ppl import LoadedRun
from dpm_ppl.cli._query_script import load_query, run_query
from dpm_ppl.datasets import Standardiser


T, D = 8, 3
BETAS = np.asarray(dpm.GeometricSchedule(T, 1e-3, 0.5)(), np.float64)
ANGLES = (0.7, -0.5, 0.9)


def _rotation():
    a, b, c = ANGLES
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


class LinearKernel(eqx.Module):
    """p(xᵗ⁻¹ | xᵗ) = N(M_t xᵗ + c_t, diag w_t), row t − 1 for step t."""

    matrix: jax.Array
    offset: jax.Array
    variance: jax.Array

    def __call__(self, x_t, t):
        i = jnp.asarray(t) - 1
        return self.matrix[i] @ x_t + self.offset[i], self.variance[i]


def correlated_model():
    """The model and its exact p(x⁰) = N(μ₀, Σ₀) (model units)."""
    R = _rotation()
    oracle = dpm.GaussianOracle(BETAS, [0.4, -0.3, 0.2], [1.4, 0.6, 0.25])  # in the rotated basis u = Rᵀx
    slope, offset, var = (np.asarray(a, np.float64) for a in (oracle.slope, oracle.offset, oracle.variance))
    M = np.einsum("ij,tj,kj->tik", R, slope, R)  # R diag(a_t) Rᵀ
    c = offset @ R.T
    w = np.einsum("ij,tj,ij->ti", R, var, R)  # the diagonal of R diag(w_t) Rᵀ
    kernel = LinearKernel(jnp.asarray(M, jnp.float32), jnp.asarray(c, jnp.float32), jnp.asarray(w, jnp.float32))
    model = dpm.GaussianDiffusion((D,), dpm.ArraySchedule(jnp.asarray(BETAS, jnp.float32)), kernel=kernel)
    mu, cov = np.zeros(D), np.eye(D)
    for t in range(T, 1, -1):
        mu, cov = M[t - 1] @ mu + c[t - 1], M[t - 1] @ cov @ M[t - 1].T + np.diag(w[t - 1])
    b1 = BETAS[0]
    return model, np.sqrt(1 - b1) * mu, (1 - b1) * cov + b1 * np.eye(D)


MODEL, MU0, COV0 = correlated_model()
STD = Standardiser(np.array([50.0, -2.0, 0.5], np.float32), np.array([10.0, 0.5, 3.0], np.float32))
MU_X = MU0 * STD.scale + STD.shift
COV_X = COV0 * np.outer(STD.scale, STD.scale)
NAMES = ["height", "ratio", "score"]


def conditional(row):
    """Mean and covariance of the NaN entries of ``row`` (data units) given the others, and log p(observed)."""
    h, o = np.isnan(row), ~np.isnan(row)
    gain = COV_X[np.ix_(h, o)] @ np.linalg.inv(COV_X[np.ix_(o, o)])
    mean = MU_X[h] + gain @ (row[o] - MU_X[o])
    cov = COV_X[np.ix_(h, h)] - gain @ COV_X[np.ix_(o, h)]
    return mean, cov, stats.multivariate_normal.logpdf(row[o], MU_X[o], COV_X[np.ix_(o, o)])


def test_the_model_has_correlated_columns():
    corr = COV0 / np.sqrt(np.outer(np.diag(COV0), np.diag(COV0)))
    assert np.max(np.abs(corr - np.eye(D))) > 0.5  # so that the observed columns inform the missing ones


def fake_run(n_test=40, seed=0):
    """A LoadedRun around the closed-form model: held-out rows drawn from its own p(x⁰) (model units)."""
    rng = np.random.default_rng(seed)
    test = rng.multivariate_normal(MU0, COV0, size=n_test).astype(np.float32)
    train = rng.multivariate_normal(MU0, COV0, size=200).astype(np.float32)
    data = types.SimpleNamespace(column_names=NAMES, modality=None)
    split = types.SimpleNamespace(train=train, val=test[:0], test=test, standardiser=STD)
    return LoadedRun(types.SimpleNamespace(data=data, name="oracle"), MODEL, split, {})


ROWS = np.array(
    [
        [62.0, np.nan, np.nan],  # one column known, two missing
        [np.nan, -1.6, 2.0],
        [45.0, -2.3, np.nan],
        [np.nan, np.nan, -1.0],
    ],
    np.float32,
)


def test_impute_matches_the_conditional_gaussian_in_data_units(tmp_path):
    """`dpm query inference/impute.py --observations rows.csv` on the closed-form run: the posterior mean and
    variance of every missing entry, its 90% interval and log Z (the observed entries' density in data units)
    against the conditional Gaussian, the observed entries returned exactly, query.json, figures."""
    path = tmp_path / "rows.csv"
    path.write_text("height,ratio,score\n" + "\n".join(",".join("" if np.isnan(v) else repr(float(v)) for v in r)
                                                       for r in ROWS) + "\n")  # fmt: skip
    out = tmp_path / "q"
    result, report = run_query(
        "inference/impute.py", fake_run(), out, observations=path, num_particles=1000, num_runs=16, progress=False
    )
    x = result.x0  # (run, draw, row, column), data units
    assert x.shape == (16, 1000, 4, 3)
    # besides the Monte-Carlo error, SMC's resampled draws are biased at O(1/N): their variance comes out low
    # by about 1/ESS (measured here: 2–3% at N = 1000, ESS_min ≈ 140; < 1% at N = 4000); allowed as 3/ESS_min
    bias = 3.0 / result.ess_min
    known = ~np.isnan(ROWS)
    np.testing.assert_allclose(x[:, :, known], np.broadcast_to(ROWS[known], x[:, :, known].shape), rtol=2e-6)
    intervals = report["answer"]["intervals"]
    assert report["answer"]["num_missing"] == int(np.isnan(ROWS).sum()) == len(intervals["row"])
    assert report["observations"] == str(path) and "score" not in report  # no truth: no score
    got_log_Z, want_log_Z = [], []
    for i, row in enumerate(ROWS):
        h = np.isnan(row)
        mean, cov, log_Z = conditional(row.astype(np.float64))
        runs = x[:, :, i][..., h]  # (run, draw, hidden)
        run_mean, run_var = runs.mean(1), runs.var(1)
        se_mean = run_mean.std(0, ddof=1) / np.sqrt(len(runs))
        se_var = run_var.std(0, ddof=1) / np.sqrt(len(runs))
        sd = np.sqrt(np.diag(cov))
        assert np.all(np.abs(run_mean.mean(0) - mean) < N_SE * se_mean + 1e-3 * sd), (i, run_mean.mean(0), mean)
        assert np.all(np.abs(run_var.mean(0) - np.diag(cov)) < N_SE * se_var + bias * sd**2), (i, run_var, cov)
        # the 5% and 95% quantiles against the Gaussian's, with their spread over runs
        q = np.quantile(runs, [0.05, 0.95], axis=1)  # (2, run, hidden)
        se_q = q.std(1, ddof=1) / np.sqrt(len(runs))
        z90 = stats.norm.ppf(0.95)
        want_q = mean + np.array([[-1.0], [1.0]]) * z90 * sd
        assert np.all(np.abs(q.mean(1) - want_q) < N_SE * se_q + z90 * sd * bias / 2), (i, q.mean(1), want_q)
        sel = [k for k, r in enumerate(intervals["row"]) if r == i]
        assert [intervals["column"][k] for k in sel] == list(np.flatnonzero(h))
        assert [intervals["name"][k] for k in sel] == [NAMES[j] for j in np.flatnonzero(h)]
        lo, hi = (np.array([intervals[key][k] for k in sel]) for key in ("lower", "upper"))
        assert np.all((lo < mean) & (mean < hi))
        got_log_Z.append(report["log_Z"][i])
        want_log_Z.append(log_Z)
    se = np.asarray(report["log_Z_stderr"])
    assert np.all(np.abs(np.array(got_log_Z) - want_log_Z) < N_SE * se + 0.02), (got_log_Z, want_log_Z, se)
    saved = json.loads((out / "query.json").read_text())
    assert saved["answer"]["intervals"]["name"] == intervals["name"] and "figure_errors" not in saved
    tree = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")
    np.testing.assert_allclose(tree["posterior"]["x0"].values, x)
    for name in ("posterior.png", "ess.png", "intervals.png"):
        assert (out / name).stat().st_size > 0


def test_impute_demo_hides_entries_and_scores_its_intervals(tmp_path):
    """Without observations: ~30% of the held-out entries hidden (truth kept), and the 90% intervals of the exact
    conditional cover about 90% of them (held-out rows drawn from the model itself)."""
    query = load_query("inference/impute.py")
    run = fake_run(n_test=60, seed=1)
    observed = query.observe(run, jax.random.split(jax.random.key(3))[0], 60)  # the key run_query gives it
    y = observed.observations["y"]
    hidden = np.isnan(y)
    assert 0.2 < hidden.mean() < 0.4
    np.testing.assert_allclose(y[~hidden], observed.truth[~hidden])
    np.testing.assert_allclose(observed.truth, STD.inverse(run.split.test[:60]), rtol=1e-6)
    result, report = run_query(
        "inference/impute.py", run, tmp_path / "q", num_data=60, seed=3, num_particles=1000, num_runs=4, progress=False
    )
    score = report["score"]
    n = score["num_missing"]
    assert n == hidden.sum()
    # a row hidden entirely is not informed by the others; the rest are: coverage ~ Binomial(n, 0.9)
    assert abs(score["coverage_90"] - 0.9) < N_SE * np.sqrt(0.09 / n) + 0.02, score
    assert score["rmse_posterior_mean"] < score["rmse_training_mean"]


def test_impute_refuses_rows_that_do_not_fit_before_sampling(tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the sampler ran")

    monkeypatch.setattr(dpm.SMC, "run", never)
    path = tmp_path / "short.csv"
    np.savetxt(path, np.array([[1.0, np.nan], [np.nan, 2.0]]), delimiter=",")
    with pytest.raises(ValueError, match="observation `y` has rows of 2 values but the run models rows of 3 columns"):
        run_query("inference/impute.py", fake_run(), tmp_path / "q", observations=path, progress=False)
    full = tmp_path / "full.csv"
    np.savetxt(full, np.ones((2, 3)), delimiter=",")
    with pytest.raises(ValueError, match="nothing to impute"):
        run_query("inference/impute.py", fake_run(), tmp_path / "q", observations=full, progress=False)
    named = tmp_path / "named.csv"
    named.write_text("a,b,c\n1,,2\n")
    with pytest.raises(ValueError, match="names the columns"):
        run_query("inference/impute.py", fake_run(), tmp_path / "q", observations=named, progress=False)
    assert not (tmp_path / "q" / "posterior.nc").exists()
