"""Importance-sampled log-likelihood (paper Eqs 6–9): exact on the oracles, 1/√M convergence
to the Gaussian oracle's closed-form p(x⁰), chunking-invariant, PSIS k̂ on known tails, ArviZ and `dpm evaluate`."""

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from arviz_stats import compare
from helpers import (
    EPS32,
    LOG_2PI,
    N_SE,
    assert_within_se,
    log_mean_exp_se,
    mean_se,
    np_alpha_bar,
    np_exact_bound,
    np_oracle_coefficients,
)
from scipy.stats import chi2, norm

from dpm_ppl import (
    ArraySchedule,
    GaussianDiffusion,
    GaussianOracle,
    GeometricSchedule,
    IsotropicOracle,
    LearnedSchedule,
    log_likelihood,
)
from dpm_ppl.arviz import elpd, likelihood_datatree
from dpm_ppl.cli import main
from dpm_ppl.infer import discrete_bits_per_dim, psis_khat
from dpm_ppl.infer._likelihood import log_weights
from dpm_ppl.nn import MLPNet


T = 5
SCHEDULE = GeometricSchedule(T, 0.05, 0.6)
X0 = np.array([[0.1, 0.2], [1.0, -2.0], [-0.5, 0.3], [2.0, 1.0]], np.float32)
MEAN, STD = [0.5, -1.0], [0.7, 1.3]


def isotropic():
    return GaussianDiffusion((2,), SCHEDULE, kernel=IsotropicOracle(SCHEDULE()))


def gaussian_oracle():
    oracle = GaussianOracle(SCHEDULE(), mean=MEAN, std=STD)
    return GaussianDiffusion((2,), SCHEDULE, kernel=oracle), oracle


def exact_log_p(oracle, x0):
    """The oracle model's closed-form log p(x⁰) (float64), from `marginal_x0`."""
    mu, var = oracle.marginal_x0()
    return norm.logpdf(np.asarray(x0, np.float64), mu, np.sqrt(var)).sum(-1)


def test_isotropic_oracle_every_weight_equal_and_estimate_exact():
    """With the exact reversal of N(0, I) every weight equals N(x⁰; 0, I): log p̂ = log π(x⁰) to float precision.

    Tolerance: a log weight is a sum of n = 2(T−1) + 5 float32 log-density terms (T−1 reverse steps, T−1
    forward steps, two entropies, three prior terms), each of magnitude ≤ L = ½d(log 2π + |log β̃_min| + z²_max)
    with z²_max = 16 + max‖x⁰‖² (a 4σ draw); each is rounded to a few ulp, so |error| ≤ 4·ε₃₂·n·L.
    """
    M = 64
    d = isotropic()
    lw = np.asarray(log_weights(d, X0, jax.random.key(1), M), np.float64)
    betas = np.asarray(SCHEDULE(), np.float64)
    abar = np_alpha_bar(betas)
    var_min = min(betas.min(), ((1 - abar[1:-1]) * betas[1:] / (1 - abar[2:])).min())  # β_t and β̃_t
    L = 0.5 * 2 * (LOG_2PI + abs(math.log(var_min)) + 16 + float((X0**2).sum(-1).max()))
    tol = 4 * EPS32 * (2 * (T - 1) + 5) * L
    exact = -0.5 * (2 * LOG_2PI + (X0.astype(np.float64) ** 2).sum(-1))
    assert np.all(lw.max(1) - lw.min(1) <= tol), (lw.max(1) - lw.min(1), tol)
    est = log_likelihood(d, X0, jax.random.key(1), num_trajectories=M, chunk_size=16)
    np.testing.assert_allclose(est.log_p_hat, exact, atol=tol + EPS32 * math.log(M), rtol=0)
    np.testing.assert_allclose(est.K, exact, atol=tol, rtol=0)
    np.testing.assert_allclose(est.log_null, exact, atol=tol, rtol=0)
    np.testing.assert_allclose(est.ess, M, rtol=tol)  # (Σw)²/Σw² = M/(1 + var(w)/mean(w)²), var ≤ spread²
    assert np.all(est.stderr <= tol)  # ≈ sd(log w)/√M ≤ spread


def test_streamed_statistics_equal_those_of_all_weights():
    """The chunked scan's log p̂, delta-method stderr, ESS, K and k̂ equal those computed from every weight at once.

    Tolerance: the streamed sums of M float32 terms agree with float64 to M·ε₃₂ relatively; the stderr and
    ESS are ratios of such sums (stderr: (M/ESS − 1) loses the factor 1/(M/ESS − 1) ≤ 10 here).
    """
    M = 300  # 5 chunks of 64, the last partial: exercises the mask
    d, _ = gaussian_oracle()
    key = jax.random.key(2)
    lw = np.asarray(log_weights(d, X0, key, M), np.float64)
    est = log_likelihood(d, X0, key, num_trajectories=M, chunk_size=64, batch_size=3)
    want, want_se = log_mean_exp_se(lw, axis=1)
    w = np.exp(lw - lw.max(1, keepdims=True))
    tol = M * EPS32
    np.testing.assert_allclose(est.log_p_hat, want, atol=tol, rtol=0)
    np.testing.assert_allclose(est.K, lw.mean(1), atol=tol * np.abs(lw).max(), rtol=0)
    np.testing.assert_allclose(est.ess, w.sum(1) ** 2 / (w**2).sum(1), rtol=tol)
    np.testing.assert_allclose(est.stderr, want_se, rtol=10 * tol)
    np.testing.assert_allclose(est.khat, psis_khat(lw), atol=1e-3)  # weights equal to float32 rounding
    assert np.all(est.K <= est.log_p_hat + tol)  # Jensen holds for every finite sample


def test_chunk_and_batch_sizes_do_not_change_the_numbers():
    """Every trajectory has its own key fold_in(fold_in(key, i), m): chunking changes only summation order."""
    M = 50
    d, _ = gaussian_oracle()
    runs = [
        log_likelihood(d, X0, jax.random.key(3), num_trajectories=M, chunk_size=c, batch_size=b)
        for c, b in ((7, 1), (50, 4), (16, 3))
    ]
    tol = M * EPS32
    for other in runs[1:]:
        np.testing.assert_allclose(other.log_p_hat, runs[0].log_p_hat, atol=tol, rtol=0)
        np.testing.assert_allclose(other.K, runs[0].K, atol=tol * 10, rtol=0)
        np.testing.assert_allclose(other.ess, runs[0].ess, rtol=tol)
        np.testing.assert_allclose(other.stderr, runs[0].stderr, rtol=10 * tol)
        np.testing.assert_allclose(other.khat, runs[0].khat, atol=1e-3)


def test_gaussian_oracle_converges_to_closed_form_like_one_over_sqrt_m():
    """log p̂ → the closed-form log p(x⁰) of the Gaussian oracle; its mean-squared error falls as 1/M.

    R independent estimates per datum (the data repeated: each row has its own keys) at M₁ = 16 and
    M₂ = 256: MSE(M₁)/MSE(M₂) = 16 within N_SE delta-method standard errors of the ratio. Then
    K ≤ log p̂ (every sample), E[log p̂] = log p − ½·se² + O(M⁻²) within N_SE standard errors over
    repeats, and the mean K matches the exact E[K(x⁰)] of the linear-Gaussian bound.
    """
    R, M1, M2 = 250, 16, 256
    d, oracle = gaussian_oracle()
    rep = np.repeat(X0, R, axis=0)
    exact = np.repeat(exact_log_p(oracle, X0), R)
    est1 = log_likelihood(d, rep, jax.random.key(4), num_trajectories=M1, chunk_size=M1, batch_size=250)
    est2 = log_likelihood(d, rep, jax.random.key(5), num_trajectories=M2, chunk_size=128, batch_size=250)
    (mse1, se1), (mse2, se2) = mean_se((est1.log_p_hat - exact) ** 2), mean_se((est2.log_p_hat - exact) ** 2)
    ratio = mse1 / mse2
    ratio_se = ratio * math.hypot(se1 / mse1, se2 / mse2)
    assert_within_se(ratio, ratio_se, M2 / M1, "MSE(M=16)/MSE(M=256)")

    assert np.all(est2.K <= est2.log_p_hat + M2 * EPS32)
    by_datum = lambda a: np.asarray(a, np.float64).reshape(len(X0), R)
    mean_hat, se_hat = mean_se(by_datum(est2.log_p_hat), axis=1)
    bias = -0.5 * (by_datum(est2.stderr) ** 2).mean(1)
    assert_within_se(mean_hat, se_hat, exact_log_p(oracle, X0) + bias, "E[log p̂] at M = 256")
    a, c, w, _ = np_oracle_coefficients(SCHEDULE(), MEAN, STD)
    mean_K, se_K = mean_se(by_datum(est2.K), axis=1)
    assert_within_se(mean_K, se_K, np_exact_bound(X0, SCHEDULE(), a, c, w), "mean K")
    gain, gain_se = mean_se(by_datum(est2.log_p_hat - est2.K), axis=1)
    assert np.all(gain > N_SE * gain_se), "IS is not tighter than K"


@pytest.mark.parametrize("k", [0.2, 0.5, 0.9])
def test_psis_khat_recovers_a_known_pareto_tail(k):
    """Weights w = U^(−k) (log w = k·Exp(1)) have a Pareto tail of shape k exactly.

    Over 32 rows of M = 4000, mean k̂ = k within N_SE standard errors plus the shrinkage of arviz's
    weakly informative prior (10 pseudo-observations at 0.5 against n_tail = ⌊3√M⌋ = 189).
    """
    M, rows = 4000, 32
    lw = k * np.random.default_rng(6).exponential(size=(rows, M))
    khat = psis_khat(lw)
    n_tail = math.floor(3 * math.sqrt(M))
    mean, se = mean_se(khat)
    shrink = abs(0.5 - k) * 10 / (n_tail + 10)
    assert abs(mean - k) <= N_SE * se + shrink, (mean, se, k)
    assert np.isnan(psis_khat(lw[:, :24])).all()  # fewer than 25 draws: a tail of < 5 cannot be fitted


class WideReverse(eqx.Module):
    """N(√(1−β_t)·xᵗ, inflate·β_t): the isotropic reversal with its variance inflated."""

    betas: jax.Array
    inflate: float

    def __call__(self, x_t, t):
        beta = self.betas[t - 1]
        return jnp.sqrt(1.0 - beta) * x_t, jnp.full_like(x_t, self.inflate * beta)


@pytest.mark.parametrize("inflate", [1.5, 20.0])
def test_khat_of_a_too_wide_reverse_kernel_matches_its_tail(inflate):
    """T = 2, d = 1, x⁰ = 0: log w = const + λu² with u = x¹ − √α₂x² ~ N(0, σ²), σ² = β₂²β₁ + α₂β₂ and
    λ = (1/β₂ − 1/v)/2 for v = inflate·β₂. So P(w > y) ∝ y^(−1/k)/√log y with k = 2λσ² (paper-free algebra).

    The √log factor makes the local shape at PSIS's threshold (χ²₁ tail probability n_tail/M, at s)
    k/(1 + 1/s), so mean k̂ lies in [k/(1 + 1/s), k] within N_SE standard errors.
    """
    betas = np.array([0.05, 0.05], np.float32)
    d = GaussianDiffusion((1,), ArraySchedule(betas), kernel=WideReverse(jnp.asarray(betas), inflate))
    M, rows = 4000, 32
    est = log_likelihood(d, np.zeros((rows, 1), np.float32), jax.random.key(7), num_trajectories=M, chunk_size=1000)
    b1, b2 = (float(b) for b in betas)
    k = (b2**2 * b1 + (1 - b2) * b2) * (1 / b2 - 1 / (inflate * b2))
    s = chi2.isf(math.floor(3 * math.sqrt(M)) / M, 1)
    mean, se = mean_se(est.khat)
    assert k / (1 + 1 / s) - N_SE * se <= mean <= k + N_SE * se, (mean, se, k / (1 + 1 / s), k)


def test_units_bits_and_discrete_bits_per_dim():
    """Bits are nats/ln 2; the 8-bit convention gives 8 bits/dim for a uniform density and 0 for one bin."""
    d, _ = gaussian_oracle()
    est = log_likelihood(d, X0, jax.random.key(8), num_trajectories=30, chunk_size=30)
    bits, per_dim = est.bits(), est.bits_per_dim()
    np.testing.assert_allclose(bits["loglik_is"], est.log_p_hat / math.log(2), rtol=1e-6)
    np.testing.assert_allclose(bits["K_minus_Lnull"], (est.K - est.log_null) / math.log(2), rtol=1e-5)
    np.testing.assert_allclose(per_dim["K"], bits["K"] / 2)
    dim, scale = 3, 0.29  # raw data in [0, 1], z = (x − shift)/scale
    uniform = dim * math.log(scale)  # p_x = 1 on [0, 1]^d is p_z = scale^d
    assert discrete_bits_per_dim(uniform, dim, scale) == pytest.approx(8.0)
    one_bin = uniform + dim * math.log(256)  # all mass uniform in one 1/256-wide bin
    assert discrete_bits_per_dim(one_bin, dim, scale) == pytest.approx(0.0, abs=1e-12)
    assert discrete_bits_per_dim(uniform, dim, scale, bin_width=1.0) == pytest.approx(0.0, abs=1e-12)


def test_datatree_loo_and_compare(tmp_path):
    """The DataTree's log_likelihood group feeds `arviz_stats.loo` (via `elpd`) and `compare` ranks two models."""
    d, oracle = gaussian_oracle()
    x0 = (np.asarray(MEAN) + np.asarray(STD) * np.random.default_rng(9).standard_normal((40, 2))).astype(np.float32)
    good = log_likelihood(d, x0, jax.random.key(10), num_trajectories=64)
    bad = log_likelihood(isotropic(), x0, jax.random.key(10), num_trajectories=64)
    tree = likelihood_datatree(good, x0)
    tree.to_netcdf(tmp_path / "l.nc", engine="h5netcdf")
    tree = xr.open_datatree(tmp_path / "l.nc", engine="h5netcdf")
    assert tree["log_likelihood"]["x0"].dims == ("chain", "draw", "datum")
    assert set(tree["sample_stats"].data_vars) == {"khat", "ess", "stderr", "K"}
    result = elpd(tree)
    assert result.elpd == pytest.approx(float(good.log_p_hat.sum()), rel=1e-6)
    np.testing.assert_allclose(result.elpd_i.values, good.log_p_hat, rtol=1e-6)
    table = compare({"oracle": result, "isotropic": elpd(likelihood_datatree(bad))})
    assert table.index[0] == "oracle"


def test_bad_arguments_are_rejected_with_a_fix():
    d, _ = gaussian_oracle()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_trajectories.*got 0"):
        log_likelihood(d, X0, key, num_trajectories=0)
    with pytest.raises(ValueError, match="num_trajectories.*got 2.5"):
        log_likelihood(d, X0, key, num_trajectories=2.5)
    with pytest.raises(ValueError, match="chunk_size"):
        log_likelihood(d, X0, key, num_trajectories=4, chunk_size=0)
    with pytest.raises(ValueError, match=r"x0.*\(3,\).*expects \(2,\)"):
        log_likelihood(d, np.zeros((4, 3), np.float32), key, num_trajectories=4)
    unbound = GaussianDiffusion((2,), LearnedSchedule(SCHEDULE), network=MLPNet(2, T, width=4, depth=1, key=key))
    with pytest.raises(ValueError, match="bind"):
        log_likelihood(unbound, X0, key, num_trajectories=4)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    args = ["fit", "models/swiss_roll.py", "--out", str(out), "--steps", "40", "--T", "5", "--num-samples", "100"]
    assert main([*args, "--no-progress"]) == 0
    return out


def test_dpm_evaluate_end_to_end(run_dir, tmp_path, capsys):
    """`dpm evaluate` prints the table and writes evaluation.json, the DataTree and the k̂ figure."""
    code = main(
        [
            "evaluate",
            str(run_dir),
            "--num-trajectories",
            "32",
            "--num-data",
            "50",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "IS estimate" in printed and "true log-likelihood" in printed and "k̂" in printed
    results = json.loads((tmp_path / "evaluation.json").read_text())
    for name in (
        "K_bits",
        "loglik_is_bits",
        "loglik_is_stderr_bits",
        "khat_max",
        "khat_frac_over_0p7",
        "M",
        "true_loglik_bits",
        "L_null_bits",
        "K_minus_Lnull_bits",
        "loglik_is_bits_per_dim",
    ):
        assert name in results, name
    assert results["M"] == 32 and results["num_data"] == 50
    assert results["loglik_is_bits"] >= results["K_bits"]
    assert 0.0 <= results["khat_frac_over_0p7"] <= 1.0 and math.isfinite(results["khat_max"])
    tree = xr.open_datatree(tmp_path / "likelihood.nc", engine="h5netcdf")
    assert tree["log_likelihood"]["x0"].shape == (1, 1, 50)
    assert (tmp_path / "khat.png").stat().st_size > 0


def test_dpm_evaluate_rejects_a_folder_that_is_not_a_run(tmp_path):
    assert main(["evaluate", str(tmp_path), "--num-trajectories", "4"]) == 2
