"""`dpm_ppl.infer.NUTS` against closed forms on the Gaussian oracle (paper §2.5).

The oracle's p(x⁰) = N(μ₀, σ₀²) per coordinate is exact, so a Gaussian r(x⁰) = N(y; x⁰, σ²) has a
conjugate posterior, and a shared latent shift b ~ N(0, 1) in y = x⁰ + b + noise has a Gaussian
posterior in closed form too. Tolerances are N_SE standard errors with the ESS NUTS reports.
"""

import arviz_stats as azs
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from helpers import N_SE, mean_se, query_oracle, var_se
from numpyro.infer.util import log_density

import dpm_ppl as dpm
from dpm_ppl import QueryError, observe_exactly
from dpm_ppl.infer._query import LogR
from dpm_ppl.infer.samplers import NUTS
from dpm_ppl.infer.samplers._nuts import NOISE, _whitened_model, trajectory_from_noise


T = 10
BETAS, ORACLE, MODEL, Y = query_oracle(T)
Y = jnp.asarray(Y)
MU0, S20 = ORACLE.marginal_x0()
FAST = dict(num_chains=2, num_samples=30, num_warmup=30)


def noisy(scale):
    def query(diffusion, y):
        x0 = diffusion.prior((y.shape[0],))
        numpyro.sample("y", dist.Normal(x0, scale).to_event(1), obs=y)

    return query


def shifted(scale):
    def query(diffusion, y):
        x0 = diffusion.prior((y.shape[0],))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(x0 + b, scale).to_event(1), obs=y)

    return query


def unknown_scale(diffusion, y):
    x0 = diffusion.prior((y.shape[0],))
    scale = numpyro.sample("scale", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(x0, scale).to_event(1), obs=y)


def ess(result, name):
    return np.asarray(azs.ess(result.tree, var_names=[name])[name].values)


def check_moments(x, mean, var, n, what):
    """x: draws (chain, draw, …) against a normal of ``mean``/``var`` with ``n`` effective draws."""
    flat = np.asarray(x, np.float64).reshape((-1,) + np.shape(x)[2:])
    got_mean, got_var = flat.mean(0), flat.var(0)
    se_mean, se_var = np.sqrt(var / n), var * np.sqrt(2.0 / n)
    assert np.all(np.abs(got_mean - mean) < N_SE * se_mean + 1e-3), (what, got_mean, mean, se_mean)
    assert np.all(np.abs(got_var - var) < N_SE * se_var + 1e-3), (what, got_var, var, se_var)


def test_noise_map_is_ancestral_sampling_of_the_model(key):
    noise = jax.random.normal(key, (20_000, T + 1, 2))
    traj, x0 = trajectory_from_noise(MODEL, noise)
    assert traj.shape == (20_000, T, 2) and x0.shape == (20_000, 2)
    np.testing.assert_array_equal(traj[:, -1], noise[:, T])  # x^T = ε_T
    m, se = mean_se(x0)
    assert np.all(np.abs(m - MU0) < N_SE * se), (m, MU0)
    v, se = var_se(x0)
    assert np.all(np.abs(v - S20) < N_SE * se), (v, S20)


def test_whitened_potential_is_standard_normal_noise_plus_log_r(key):
    log_r = LogR(noisy(0.5), MODEL, {"y": Y}, key)
    eps = jax.random.normal(jax.random.key(1), (2, T + 1, 2))
    got, trace = log_density(_whitened_model(log_r), (), {}, {NOISE: eps})
    _, x0 = trajectory_from_noise(MODEL, eps)
    want = jax.scipy.stats.norm.logpdf(eps).sum() + log_r(x0).sum()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert "trajectory" not in trace and trace["x0"]["type"] == "deterministic"


def test_gaussian_r_matches_conjugate_posterior(key):
    scale = 0.5
    log_r = LogR(noisy(scale), MODEL, {"y": Y}, key)
    r = NUTS(num_chains=2, num_samples=300, num_warmup=200).run(log_r, key, progress=False)
    var = 1.0 / (1.0 / S20 + 1.0 / scale**2)
    mean = var * (MU0 / S20 + np.asarray(Y) / scale**2)
    check_moments(r.x0, mean, var, ess(r, "x0"), "x0")
    assert r.sampler == "nuts" and r.log_Z is None and r.khat is None
    assert r.tree["posterior"]["x0"].dims == ("chain", "draw", "datum", "dim_0")
    assert r.x0.shape == (2, 300, 2, 2)
    assert r.rhat_max < 1.05 and r.ess_min > 100
    assert r.ess_min == pytest.approx(ess(r, "x0").min())
    stats = r.tree["sample_stats"]
    assert stats["diverging"].shape == stats["accept_prob"].shape == stats["num_steps"].shape == (2, 300)
    assert r.diagnostics["divergences"] == 0.0 == int(stats["diverging"].sum())
    assert 0.5 < r.diagnostics["mean_accept_prob"] <= 1.0 and r.diagnostics["mean_num_steps"] >= 1
    assert "noise" not in r.tree["posterior"] and "trajectory" not in r.tree["posterior"]
    np.testing.assert_array_equal(r.tree["observed_data"]["y"].values, Y)
    assert isinstance(r.report()["warnings"], list)


def test_shared_latent_matches_its_closed_form_posterior(key):
    """y_ij = x⁰_ij + b + N(0, σ²), b ~ N(0, 1): marginally y_ij − μ₀_j ~ N(b, σ₀²_j + σ²), so b's
    posterior is N(Σ w(y − μ₀) / (1 + Σ w), 1 / (1 + Σ w)), w = 1/(σ₀² + σ²)."""
    scale = 0.5
    log_r = LogR(shifted(scale), MODEL, {"y": Y}, key)
    r = NUTS(num_chains=2, num_samples=300, num_warmup=200).run(log_r, key, progress=False)
    w = np.broadcast_to(1.0 / (S20 + scale**2), Y.shape)
    prec = 1.0 + w.sum()
    b_mean, b_var = (w * (np.asarray(Y) - MU0)).sum() / prec, 1.0 / prec
    assert r.tree["posterior"]["b"].dims == ("chain", "draw")
    check_moments(r.tree["posterior"]["b"].values, b_mean, b_var, ess(r, "b"), "b")
    assert r.rhat_max < 1.05


@pytest.mark.parametrize("whiten", [True, False])
def test_query_latent_is_sampled_and_in_the_tree(key, whiten):
    log_r = LogR(unknown_scale, MODEL, {"y": Y}, key)
    r = NUTS(**FAST, whiten=whiten).run(log_r, key, progress=False)
    scale = r.tree["posterior"]["scale"]
    assert scale.dims == ("chain", "draw") and scale.shape == (2, 30)
    assert np.all(scale.values > 0) and np.all(np.isfinite(r.x0))
    assert r.x0.shape == (2, 30, 2, 2)


def test_unserved_queries_raise_query_error(key):
    bits = jnp.array([[1.0, 0.0, 1.0, 1.0]])
    b_betas = dpm.HarmonicSchedule(5)()
    b_model = dpm.BinomialDiffusion(
        (4,), dpm.ArraySchedule(b_betas), kernel=dpm.BernoulliOracle(b_betas, jnp.full(4, 0.5), 0.2), base_rate=0.2
    )

    def flips(diffusion, y):
        x0 = diffusion.prior((y.shape[0],))
        numpyro.sample("y", dist.Bernoulli(probs=0.1 + 0.8 * x0).to_event(1), obs=y)

    with pytest.raises(QueryError, match="BinomialDiffusion has discrete ones.*dpm_ppl.SMC"):
        NUTS().run(LogR(flips, b_model, {"y": bits}, key), key, progress=False)

    def inpaint(diffusion, y):
        observe_exactly("known", diffusion.prior((y.shape[0],)), y, jnp.array([True, False]))

    log_r = LogR(inpaint, MODEL, {"y": Y}, key)
    with pytest.raises(QueryError, match="cannot sample under `observe_exactly`"):
        NUTS().check(log_r)


@pytest.mark.parametrize(
    "option, value",
    [
        ("num_chains", 0),
        ("num_samples", 2.5),
        ("num_warmup", -1),
        ("max_tree_depth", True),
        ("target_accept_prob", 1.0),
        ("target_accept_prob", "high"),
        ("whiten", "yes"),
    ],
)
def test_bad_options_raise_at_construction(option, value):
    with pytest.raises(ValueError, match=f"`{option}`.*{value!r}"):
        NUTS(**{option: value})
