"""Posterior queries against closed forms: p̃(x⁰) ∝ p(x⁰)·r(x⁰) on oracle models (paper §2.5).

The Gaussian oracle's p(x⁰) = N(μ₀, σ₀²) per coordinate is exact (`dpm_ppl.GaussianOracle`), so a Gaussian
r has a conjugate posterior and evidence log Z = log N(y; μ₀, σ₀² + σ²); other observation models
get their posterior and evidence by quadrature on a 1-D oracle; the Bernoulli oracle gives the
binomial answers per bit. Tolerances are N_SE standard errors, with the effective sample size each
sampler reports. With a standardiser (z = (x − shift)/scale, per-column scale) the same queries in data
units have the same closed forms pushed through the affine map.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from helpers import N_SE, query_oracle
from scipy import stats

import dpm_ppl as dpm
from dpm_ppl import QueryError, in_data_units, observe_exactly, posterior
from dpm_ppl.datasets import Standardiser
from dpm_ppl.infer._linear_gaussian import recognise
from dpm_ppl.infer._query import LogR


T = 10
BETAS, ORACLE, MODEL, Y = query_oracle(T)
Y = jnp.asarray(Y)
MU0, S20 = ORACLE.marginal_x0()


def noisy(scale):
    def query(diffusion, y):
        x0 = diffusion.prior((y.shape[0],))
        numpyro.sample("y", dist.Normal(x0, scale).to_event(1), obs=y)

    return query


def conjugate(y, scale):
    """Posterior mean, variance and evidence of N(μ₀, σ₀²)·N(y; x⁰, scale²) per datum."""
    y = np.asarray(y, np.float64)
    var = 1.0 / (1.0 / S20 + 1.0 / scale**2)
    mean = var * (MU0 / S20 + y / scale**2)
    log_Z = stats.norm.logpdf(y, MU0, np.sqrt(S20 + scale**2)).sum(-1)
    return mean, var, log_Z


def check_moments(x, mean, var, n=None):
    """x: draws (chain, draw, datum, dim) of independent runs. Without ``n``, the standard errors come
    from the spread of the runs' own means and variances (honest for SMC, whose resampled draws are
    correlated); with ``n`` (effective draws per datum, e.g. NUTS's ESS), from sd/√n."""
    if n is None:
        chain_mean, chain_var = x.mean(1), x.var(1)
        k = x.shape[0]
        se_mean = chain_mean.std(0, ddof=1) / np.sqrt(k)
        se_var = chain_var.std(0, ddof=1) / np.sqrt(k)
        got_mean, got_var = chain_mean.mean(0), chain_var.mean(0)
    else:
        flat = x.reshape((-1,) + x.shape[-2:])
        n = np.asarray(n)[:, None]
        got_mean, got_var = flat.mean(0), flat.var(0)
        se_mean, se_var = np.sqrt(var / n), var * np.sqrt(2.0 / n)
    assert np.all(np.abs(got_mean - mean) < N_SE * se_mean + 1e-3), (got_mean, mean, se_mean)
    assert np.all(np.abs(got_var - var) < N_SE * se_var + 1e-3), (got_var, var, se_var)


def check_log_Z(result, log_Z):
    se = np.asarray(result.log_Z_stderr)
    assert np.all(np.abs(result.log_Z - log_Z) < N_SE * se + 0.02), (result.log_Z, log_Z, se)


def test_smc_gaussian_r_matches_conjugate_posterior_and_evidence(key):
    scale = 0.5
    r = posterior(noisy(scale), MODEL, {"y": Y}, key=key, sampler=dpm.SMC(num_particles=1000, num_runs=16))
    mean, var, log_Z = conjugate(Y, scale)
    check_moments(r.x0, mean, var)
    check_log_Z(r, log_Z)
    assert r.khat < 0.7 and r.ess_min > 100
    assert r.tree["sample_stats"]["ess"].shape == (16, T + 1, 2)
    assert r.tree["posterior"]["x0"].dims == ("chain", "draw", "datum", "dim_0")


def test_perturbed_is_close_where_r_is_smooth_and_flags_its_bias_where_it_is_not(key):
    """Eq 22 drops the factor 1/r(xᵗ) of Eq 21, so the perturbed chain is biased at any finite T; where r
    is smooth relative to the steps the bias is small and its weights say so (k̂ < 0.5), where r is
    sharp the bias is large and k̂ > 0.7 flags it."""
    smooth = posterior(noisy(3.0), MODEL, {"y": Y}, key=key, sampler=dpm.Perturbed(num_particles=2000, num_runs=4))
    exact = posterior(noisy(3.0), MODEL, {"y": Y}, key=key, sampler=dpm.SMC(num_particles=2000, num_runs=4))
    mean, var, _ = conjugate(Y, 3.0)
    sd = np.sqrt(var)
    bias = np.abs(smooth.x0.reshape(-1, 2, 2).mean(0) - mean)
    assert np.all(bias < 0.1 * sd), bias / sd  # within a tenth of a posterior sd
    assert np.all(np.abs(smooth.x0.mean((0, 1)) - exact.x0.mean((0, 1))) < 0.1 * sd)
    assert smooth.khat < 0.5

    sharp = posterior(noisy(0.5), MODEL, {"y": Y}, key=key, sampler=dpm.Perturbed(num_particles=2000, num_runs=4))
    mean, var, _ = conjugate(Y, 0.5)
    x = sharp.x0.reshape(-1, 2, 2)
    bias = max(np.max(np.abs(x.mean(0) - mean) / np.sqrt(var)), np.max(np.abs(x.var(0) / var - 1.0)))
    assert sharp.khat > 0.7, "the perturbed sampler's weights must flag its bias"
    assert bias > 0.2  # and the bias it flags is real (MC error of these moments: < 0.05)


def test_inpainting_clamps_observed_coordinates_and_samples_the_conditional(key):
    mask = jnp.array([True, False])

    def query(diffusion, y):
        x0 = diffusion.prior((y.shape[0],))
        observe_exactly("known", x0, y, mask)

    r = posterior(query, MODEL, {"y": Y}, key=key, sampler=dpm.SMC(num_particles=1000, num_runs=16))
    x = r.x0.reshape(-1, 2, 2)
    assert np.all(x[:, :, 0] == np.asarray(Y)[:, 0])  # exactly, every draw
    # the oracle's coordinates are independent: the conditional of the free one is its marginal
    check_moments(r.x0[..., 1:], np.full((2, 1), MU0[1]), np.full((2, 1), S20[1]))
    check_log_Z(r, stats.norm.logpdf(np.asarray(Y)[:, 0], MU0[0], np.sqrt(S20[0])))


# -- data units: the run's standardiser inside the query -------------------------------------

STD = Standardiser(np.array([10.0, -3.0], np.float32), np.array([2.0, 0.25], np.float32))  # z = (x − shift)/scale
LOG_SCALE = float(np.log(STD.scale).sum())
MU_X, S2_X = MU0 * STD.scale + STD.shift, S20 * STD.scale**2  # p(x⁰) in data units


def test_data_units_are_the_same_query_and_log_Z_needs_no_jacobian(key):
    """The query in data units, N(y; x⁰, σ²) with x⁰ = z·scale + shift, against the same r written in the model's
    units, N(y'; z, (σ/scale)²) with y' = (y − shift)/scale: with the same key the samplers take the same steps
    (the smoothed twist is recognised through the affine map: same ESS), the draws map onto each other, and
    log Z differs only by the density of y's units, Σ log scale; both match the closed form."""
    sigma = 0.8
    y = np.array([[12.0, -3.1], [8.5, -2.5]], np.float32)
    sampler = dpm.SMC(num_particles=1000, num_runs=16)
    data = posterior(noisy(sigma), MODEL, {"y": y}, key=key, sampler=sampler, standardiser=STD)
    model = posterior(noisy(sigma / STD.scale), MODEL, {"y": STD(y)}, key=key, sampler=sampler)
    np.testing.assert_allclose(data.log_Z, model.log_Z - LOG_SCALE, atol=2e-4)
    np.testing.assert_allclose(data.ess_min, model.ess_min, rtol=1e-3)
    same = np.isclose(data.x0, model.x0 * STD.scale + STD.shift, rtol=1e-5, atol=1e-4)
    assert same.mean() > 0.999  # float rounding may move a resampling index or two
    assert data.tree["posterior"].attrs["x0_units"].startswith("data")
    np.testing.assert_array_equal(data.tree["standardiser"]["scale"].values, STD.scale)
    exact = stats.norm.logpdf(y, MU_X, np.sqrt(S2_X + sigma**2)).sum(-1)
    check_log_Z(data, exact)
    var = 1.0 / (1.0 / S2_X + 1.0 / sigma**2)
    check_moments(data.x0, var * (MU_X / S2_X + y / sigma**2), var)
    assert data.ess_min > 100  # the smoothed twist is in use (the "tds" twist on this query: ESS ≈ 4)


def test_data_units_keep_the_observation_linear_gaussian(key):
    """`recognise` reads the data-unit observation N(y; z·scale + shift, σ²) as a selection with coefficient scale."""
    query = in_data_units(noisy(0.8), STD)
    (site,) = recognise(LogR(query, MODEL, {"y": Y * STD.scale + STD.shift}, key), key)
    assert site.index is not None and site.matrix is None
    np.testing.assert_allclose(site.coef, np.broadcast_to(STD.scale, (2, 2)), rtol=1e-5)
    np.testing.assert_allclose(site.offset, np.broadcast_to(STD.shift, (2, 2)), rtol=1e-5)


def test_data_units_exact_observation_clamps_the_model_units_value(key):
    """observe_exactly in data units: y (NaN where unknown) becomes (y − shift)/scale for the clamp, the draws
    equal y on the observed coordinate, the free one follows its data-unit marginal, and log Z is the density
    of the observed coordinate in data units, log N(y₀; μ_x, σ_x²) = model-unit density − log scale₀."""
    mask = jnp.array([True, False])

    def query(diffusion, y):
        x0 = diffusion.prior((y.shape[0],))
        observe_exactly("known", x0, y, mask)

    y = np.array([[12.0, np.nan], [9.0, np.nan]], np.float32)
    r = posterior(query, MODEL, {"y": y}, key=key, sampler=dpm.SMC(num_particles=1000, num_runs=16), standardiser=STD)
    np.testing.assert_allclose(r.x0[..., 0], np.broadcast_to(y[:, 0], r.x0.shape[:3]), rtol=1e-6)
    check_moments(r.x0[..., 1:], np.full((2, 1), MU_X[1]), np.full((2, 1), S2_X[1]))
    check_log_Z(r, stats.norm.logpdf(y[:, 0], MU_X[0], np.sqrt(S2_X[0])))


def test_observations_that_do_not_fit_are_refused_before_sampling(key, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the sampler ran")

    monkeypatch.setattr(dpm.SMC, "run", never)
    with pytest.raises(QueryError, match="observation `y` has rows of 3 values but the run models rows of 2 columns"):
        posterior(noisy(1.0), MODEL, {"y": np.zeros((2, 3), np.float32)}, key=key, standardiser=STD)
    with pytest.raises(QueryError, match="`y` has dtype <U1"):
        posterior(noisy(1.0), MODEL, {"y": np.array([["a", "b"]])}, key=key)
    with pytest.raises(QueryError, match="does not take the observations"):
        posterior(noisy(1.0), MODEL, {"y": Y, "z": Y}, key=key)
    with pytest.raises(QueryError, match=r"observation `y` holds NaN \(first at index \(1, 0\)"):
        posterior(noisy(1.0), MODEL, {"y": np.array([[0.0, 1.0], [np.nan, 0.0]], np.float32)}, key=key)


# -- any observation model: a 1-D oracle and quadrature --------------------------------------

ORACLE_1D = dpm.GaussianOracle(BETAS, [0.3], [0.8])
MODEL_1D = dpm.GaussianDiffusion((1,), dpm.ArraySchedule(BETAS), kernel=ORACLE_1D)
GRID = np.linspace(-8, 8, 4001)


def quadrature(log_r):
    """Posterior mean, variance and log Z of N(μ₀, σ₀²)·r on a grid (1-D oracle)."""
    mu0, s20 = ORACLE_1D.marginal_x0()
    log_p = stats.norm.logpdf(GRID, mu0[0], np.sqrt(s20[0])) + log_r(GRID)
    w = np.exp(log_p - log_p.max())
    dx = GRID[1] - GRID[0]
    mean = (w * GRID).sum() / w.sum()
    return mean, (w * (GRID - mean) ** 2).sum() / w.sum(), np.log(w.sum() * dx) + log_p.max()


def poisson(diffusion, counts):
    x0 = diffusion.prior((1,))
    numpyro.sample("counts", dist.Poisson(jnp.exp(x0[:, 0])), obs=counts)


def classifier(diffusion, label):
    x0 = diffusion.prior((1,))
    numpyro.factor("classifier", jax.nn.log_sigmoid(label * 3.0 * (x0[:, 0] - 0.5)))


def unknown_scale(diffusion, y):
    x0 = diffusion.prior((1,))
    scale = numpyro.sample("scale", dist.LogNormal(-0.5, 0.5))
    numpyro.sample("y", dist.Normal(x0[:, 0], scale), obs=y)


def _unknown_scale_log_r(x):
    u = np.linspace(-0.5 - 8 * 0.5, -0.5 + 8 * 0.5, 2001)  # log scale ~ N(-0.5, 0.5²)
    prior = stats.norm.pdf(u, -0.5, 0.5)
    like = stats.norm.pdf(1.5, x[:, None], np.exp(u)[None, :])
    return np.log((prior * like).sum(-1) * (u[1] - u[0]))


CASES = {
    "poisson": (poisson, {"counts": jnp.array([4.0])}, lambda x: stats.poisson.logpmf(4, np.exp(x))),
    "classifier": (classifier, {"label": jnp.array([1.0])}, lambda x: -np.logaddexp(0, -3.0 * (x - 0.5))),
    "unknown_scale": (unknown_scale, {"y": jnp.array([1.5])}, _unknown_scale_log_r),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_smc_handles_any_observation_model(case, key):
    query, obs, log_r = CASES[case]
    r = posterior(query, MODEL_1D, obs, key=key, sampler=dpm.SMC(num_particles=1000, num_runs=16))
    mean, var, log_Z = quadrature(log_r)
    check_moments(r.x0, np.array([[mean]]), np.array([[var]]))
    check_log_Z(r, log_Z)
    if case == "unknown_scale":
        assert "scale" in r.tree["posterior"]  # the query's own latent, sampled jointly


# -- binomial ---------------------------------------------------------------------------------

P = 0.2
B_BETAS = dpm.HarmonicSchedule(20)()
RATE = jnp.array([0.1, 0.5, 0.8, 0.3])
B_ORACLE = dpm.BernoulliOracle(B_BETAS, RATE, P)
B_MODEL = dpm.BinomialDiffusion((4,), dpm.ArraySchedule(B_BETAS), kernel=B_ORACLE, base_rate=P)
BITS = jnp.array([[1.0, 0.0, 1.0, 1.0]])


def check_bits(x, prob):
    """Bit frequencies of independent runs (chain, draw, datum, dim) against probabilities."""
    chain_mean = x.mean(1)
    se = chain_mean.std(0, ddof=1) / np.sqrt(x.shape[0])
    assert np.all(np.abs(chain_mean.mean(0) - prob) < N_SE * se + 1e-3), (chain_mean.mean(0), prob, se)


def test_binomial_smc_bit_flip_observations_match_closed_form(key):
    eps = 0.2

    def query(diffusion, y):
        x0 = diffusion.prior((y.shape[0],))
        numpyro.sample("y", dist.Bernoulli(probs=eps + (1 - 2 * eps) * x0).to_event(1), obs=y)

    r = posterior(query, B_MODEL, {"y": BITS}, key=key, sampler=dpm.SMC(num_particles=1000, num_runs=16))
    rho = B_ORACLE.marginal_x0()
    y = np.asarray(BITS)
    on, off = rho * np.where(y == 1, 1 - eps, eps), (1 - rho) * np.where(y == 1, eps, 1 - eps)
    prob = on / (on + off)
    check_bits(r.x0, prob)
    check_log_Z(r, np.log(on + off).sum(-1))


def test_binomial_completion_clamps_observed_bits(key):
    mask = jnp.array([True, True, False, False])

    def query(diffusion, y):
        x0 = diffusion.prior((y.shape[0],))
        observe_exactly("known", x0, y, mask)

    r = posterior(query, B_MODEL, {"y": BITS}, key=key, sampler=dpm.SMC(num_particles=1000, num_runs=16))
    x = r.x0.reshape(-1, 4)
    assert np.all(x[:, :2] == np.asarray(BITS)[0, :2])
    rho = B_ORACLE.marginal_x0()
    check_bits(r.x0[..., 2:], rho[2:])
    check_log_Z(r, np.log(rho[0]) + np.log1p(-rho[1]))


# -- errors -----------------------------------------------------------------------------------


def _nan_factor(diffusion, y):
    x0 = diffusion.prior((y.shape[0],))
    numpyro.factor("bad", jnp.sum(x0, -1) * jnp.nan)


def _per_coordinate(diffusion, y):
    x0 = diffusion.prior((y.shape[0],))
    numpyro.sample("y", dist.Normal(x0, 1.0), obs=y)  # no .to_event(1): (B, 2) per datum


def _untouched(diffusion, y):
    diffusion.prior((y.shape[0],))
    numpyro.sample("y", dist.Normal(0.0, 1.0).expand(y.shape).to_event(1), obs=y)


def _no_prior(diffusion, y):
    numpyro.sample("y", dist.Normal(0.0, 1.0).expand(y.shape).to_event(1), obs=y)


def _nothing_observed(diffusion, y):
    diffusion.prior((y.shape[0],))


@pytest.mark.parametrize(
    "query, message",
    [
        (_nan_factor, "non-finite log-density"),
        (_per_coordinate, r"shape \(2, 2\).*one number per datum"),
        (_untouched, "never touch x⁰"),
        (_no_prior, "never calls `diffusion.prior"),
        (_nothing_observed, "adds no observation"),
    ],
)
def test_bad_queries_get_clear_errors(query, message, key):
    with pytest.raises(QueryError, match=message):
        posterior(query, MODEL, {"y": Y}, key=key, sampler=dpm.SMC(num_particles=10, num_runs=1))


def test_sampler_errors(key):
    with pytest.raises(TypeError, match="`sampler` must be a dpm_ppl sampler"):
        posterior(noisy(1.0), MODEL, {"y": Y}, key=key, sampler="mcmc")
    with pytest.raises(ValueError, match="`twist` must be one of"):
        dpm.SMC(twist="r_at_xt")
    with pytest.raises(ValueError, match="`num_runs` must be a positive integer"):
        dpm.SMC(num_runs=0)
    with pytest.raises(ValueError, match="`rejuvenate`"):
        dpm.SMC(rejuvenate=-1)
    with pytest.raises(QueryError, match="BinomialFamily are discrete"):
        posterior(
            lambda d, y: numpyro.sample("y", dist.Bernoulli(probs=0.1 + 0.8 * d.prior((1,))).to_event(1), obs=y),
            B_MODEL,
            {"y": BITS},
            key=key,
            sampler=dpm.SMC(rejuvenate=2),
        )


def _located(diffusion, y, scale):
    x0 = diffusion.prior((y.shape[0],))
    numpyro.sample("y", dist.Normal(x0, scale).to_event(1), obs=y)


def test_new_observations_reuse_the_compiled_sampler(key, monkeypatch):
    """A second query of the same model with new observations of the same shapes (here also a new noise
    scale; and the same for a query in data units) traces the SMC program no more: `LogR` is a pytree whose
    observations are arguments of the compiled run, not constants baked into it. Each answer is still its own
    conjugate posterior's."""
    from dpm_ppl.infer.samplers import _smc_engine as engine

    traces = []
    run = engine.run
    monkeypatch.setattr(engine, "run", lambda *a, **k: traces.append(1) or run(*a, **k))
    smc = dpm.SMC(num_particles=500, num_runs=4)
    standardiser = Standardiser(np.array([1.0, -2.0], np.float32), np.array([2.0, 0.5], np.float32))
    for units in (None, standardiser):
        counts = []
        for y, scale in ((Y, 0.4), (Y + 0.3, 0.7), (Y - 0.5, 0.25)):
            obs = {"y": y, "scale": jnp.asarray(scale)}
            r = posterior(_located, MODEL, obs, key=key, sampler=smc, progress=False, standardiser=units)
            counts.append(len(traces))
            if units is None:
                _, _, log_Z = conjugate(y, scale)
                assert np.all(np.abs(r.log_Z - log_Z) < N_SE * r.log_Z_stderr + 1e-3), (r.log_Z, log_Z)
        assert counts[0] >= 1 and counts[1] == counts[0] and counts[2] == counts[0], (units, counts)
        traces.clear()


def test_a_query_that_needs_concrete_observations_still_runs(key):
    """numpy on the observations inside the query cannot be traced: that query is compiled with its observations
    as constants (once per call), and its answer is the conjugate one."""

    def numpy_query(diffusion, y):
        known = ~np.isnan(np.asarray(y))  # concrete only
        x0 = diffusion.prior((y.shape[0],))
        numpyro.sample("y", dist.Normal(x0, 0.5).mask(known).to_event(1), obs=jnp.where(known, y, 0.0))

    r = posterior(numpy_query, MODEL, {"y": Y}, key=key, sampler=dpm.SMC(num_particles=500, num_runs=4), progress=False)
    _, _, log_Z = conjugate(Y, 0.5)
    assert np.all(np.abs(r.log_Z - log_Z) < N_SE * r.log_Z_stderr + 1e-3), (r.log_Z, log_Z)
