"""The bound K (paper Eq 14) as `DiffusionELBO`: equal in expectation to NumPyro's
`Trace_ELBO` on the same model and guide, exact on the oracles."""

import json
import math
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from helpers import (
    EPS32,
    N_SE,
    assert_within_se,
    log_mean_exp_se,
    mean_se,
    np_exact_bound,
    np_log_normal,
    np_oracle_coefficients,
    perturbed_mlp,
)
from numpyro.infer import Trace_ELBO

from dpm_ppl import (
    ArraySchedule,
    BoundTerms,
    DiffusionELBO,
    GaussianDiffusion,
    GaussianOracle,
    GeometricSchedule,
    HarmonicSchedule,
    IsotropicOracle,
    LearnedSchedule,
)
from dpm_ppl import _gaussian as gaussian


ESTIMATORS = ("stratified", "uniform", "all", "trajectory")
T = 5
SCHEDULE = GeometricSchedule(T, 0.05, 0.6)
X0 = jnp.array([[0.1, 0.2], [1.0, -2.0], [-0.5, 0.3], [2.0, 1.0]])  # ‖x⁰‖² far from and near d = 2
N_DRAWS = 4000


def loss_draws(elbo, params, model, guide, x0, n, seed):
    """n independent draws of ``elbo.loss`` (vmapped over keys, jitted), as float64 numpy."""
    keys = jax.random.split(jax.random.key(seed), n)
    draws = jax.jit(jax.vmap(lambda k: elbo.loss(k, params, model, guide, x0)))(keys)
    return np.asarray(draws, np.float64)


def terms_draws(estimator, params, diffusion, x0, n, seed):
    """n independent draws of the per-datum BoundTerms arrays, stacked on a leading axis."""
    elbo = DiffusionELBO(estimator)
    keys = jax.random.split(jax.random.key(seed), n)
    one = lambda k: tuple(elbo.terms(k, params, diffusion.model, diffusion.guide, x0)[0])[:-1]
    return BoundTerms(*jax.jit(jax.vmap(one))(keys), dim=diffusion.dim)


def oracle_setup():
    oracle = GaussianOracle(SCHEDULE(), mean=[0.5, -1.0], std=[0.7, 1.3])
    return GaussianDiffusion((2,), SCHEDULE, kernel=oracle), {}


def mlp_setup():
    """A random (non-zero-output) MLP reverse kernel and a learned schedule moved off its init."""
    net = perturbed_mlp(2, T, 11)
    diffusion = GaussianDiffusion((2,), LearnedSchedule(SCHEDULE), network=net)
    params = diffusion.param_init()
    assert set(params) == {"network$params", "schedule$params"}
    logits = params["schedule$params"].logits
    params["schedule$params"] = eqx.tree_at(
        lambda s: s.logits,
        params["schedule$params"],
        logits + 0.3 * jax.random.normal(jax.random.key(12), logits.shape),
    )
    return diffusion, params


SETUPS = {"oracle": oracle_setup, "mlp": mlp_setup}


@pytest.fixture(scope="module", params=list(SETUPS))
def setup(request):
    """(name, diffusion, params, Trace_ELBO loss draws): the plain Monte-Carlo reference, computed once."""
    diffusion, params = SETUPS[request.param]()
    reference = loss_draws(Trace_ELBO(), params, diffusion.model, diffusion.guide, X0, N_DRAWS, seed=100)
    return request.param, diffusion, params, reference


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_expectation_equals_trace_elbo(setup, estimator):
    """E[DiffusionELBO loss] = E[Trace_ELBO loss] = −Σ_batch K(x⁰) on the same model, guide and params
    (the Rao-Blackwellised vs plain Monte-Carlo forms of Eq 14): |Δmean| ≤ 4 combined stderrs,
    4000 independent draws of each."""
    name, diffusion, params, reference = setup
    draws = loss_draws(DiffusionELBO(estimator), params, diffusion.model, diffusion.guide, X0, N_DRAWS, seed=200)
    assert np.all(np.isfinite(draws))
    m, se = mean_se(draws)
    m_ref, se_ref = mean_se(reference)
    assert_within_se(m, math.hypot(se, se_ref), m_ref, f"{name}/{estimator} vs Trace_ELBO")


def test_oracle_expectation_equals_closed_form_bound():
    """Gaussian oracle: the "all" and "trajectory" estimators average to the exact E_q K(x⁰), computed
    in float64 from Eq 12 with the KL's expectation over xᵗ in closed form
    (`helpers.np_exact_bound`), per datum (4000 draws, 4 stderr)."""
    diffusion, params = oracle_setup()
    a, c, w, _ = np_oracle_coefficients(SCHEDULE(), [0.5, -1.0], [0.7, 1.3])
    exact = np_exact_bound(np.asarray(X0), np.asarray(SCHEDULE(), np.float64), a, c, w)
    for estimator in ("all", "trajectory"):
        terms = terms_draws(estimator, params, diffusion, X0, N_DRAWS, seed=300)
        m, se = mean_se(terms.K)
        assert_within_se(m, se, exact, f"oracle K(x0), {estimator}")


def test_learned_schedule_gradient_equals_trace_elbo_gradient():
    """The frozen-noise gradient (paper §2.4.1): E ∇_logits DiffusionELBO = E ∇_logits Trace_ELBO = −∇K,
    both pathwise through the reparameterised forward chain (8000 draws each, 4 combined stderrs
    per component)."""
    diffusion, params = mlp_setup()
    n = 8000

    def grads(elbo, seed):
        keys = jax.random.split(jax.random.key(seed), n)
        one = lambda k: jax.grad(lambda p: elbo.loss(k, p, diffusion.model, diffusion.guide, X0))(params)
        return np.asarray(jax.jit(jax.vmap(one))(keys)["schedule$params"].logits, np.float64)

    g_all, g_ref = grads(DiffusionELBO("all"), 400), grads(Trace_ELBO(), 401)
    m, se = mean_se(g_all)
    m_ref, se_ref = mean_se(g_ref)
    assert_within_se(m, np.hypot(se, se_ref), m_ref, "d loss / d logits")
    assert np.all(np.abs(m_ref) > 0) and np.any(np.abs(m_ref) > N_SE * se_ref)  # a gradient that is really there


def test_extra_sites_enter_by_monte_carlo():
    """A model/guide pair with an extra latent z besides the diffusion: DiffusionELBO adds the plain
    Monte-Carlo log p(z) − log q(z), so its expectation still equals Trace_ELBO's (4 combined stderrs)."""
    diffusion, params = oracle_setup()

    def model(x0):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.sample("w", dist.Normal(z, 0.5), obs=0.8)
        diffusion.model(x0)

    def guide(x0):
        numpyro.sample("z", dist.Normal(0.3, 0.6))
        diffusion.guide(x0)

    m, se = mean_se(loss_draws(DiffusionELBO("all"), params, model, guide, X0, N_DRAWS, seed=500))
    m_ref, se_ref = mean_se(loss_draws(Trace_ELBO(), params, model, guide, X0, N_DRAWS, seed=501))
    assert_within_se(m, math.hypot(se, se_ref), m_ref, "extra latent site")


# -- isotropic oracle: K = L_null exactly ---------------------------------------------------------


def isotropic(schedule):
    return GaussianDiffusion((3,), schedule, kernel=IsotropicOracle(schedule()))


X0_ISO = 1.5 * jax.random.normal(jax.random.key(21), (16, 3))  # various ‖x⁰‖², not only ≈ d


def test_isotropic_trajectory_bound_is_exactly_log_prior():
    """For the exact time reversal, log p(x⁰…ᵀ) − log q(x¹…ᵀ|x⁰) = log π(x⁰) for EVERY trajectory and
    every x⁰ (π-reversibility), so the "trajectory" estimator gives K − L_null = 0 per datum and
    Trace_ELBO's loss is −Σ log π(x⁰) per draw.

    float32 tolerance: the result is a sum of terms of size S = |kl| + |H_T| + |H_1| + |C| + |log π|,
    each a sum of ≤ T·d Gaussian log densities with well-conditioned variances (β̃_t ≥ 0.08 here),
    so the rounding error is ≤ 32·eps·S (measured ≈ 3·eps·S)."""
    schedule = HarmonicSchedule(T)
    diffusion = isotropic(schedule)
    terms = terms_draws("trajectory", {}, diffusion, X0_ISO, 64, seed=600)
    S = sum(
        np.abs(np.asarray(x, np.float64))
        for x in (terms.kl, terms.entropy_T, terms.entropy_1, terms.prior, terms.log_null)
    )
    resid = np.abs(np.asarray(terms.K - terms.log_null, np.float64))
    assert np.all(resid <= 32 * EPS32 * S), (resid.max(), (resid / S).max() / EPS32)
    assert np.all(np.asarray(terms.kl) != 0.0)  # the pieces are not trivially zero; they cancel
    trace = loss_draws(Trace_ELBO(), {}, diffusion.model, diffusion.guide, X0_ISO, 64, seed=601)
    log_null = float(np.asarray(gaussian.log_prior(X0_ISO, 1), np.float64).sum())
    S_total = float(S.sum(-1).max())
    np.testing.assert_allclose(trace, -log_null, rtol=0, atol=32 * EPS32 * S_total)


_X64_SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp
    assert jax.config.jax_enable_x64
    from dpm_ppl._bound import DiffusionELBO
    from dpm_ppl._kernels import IsotropicOracle
    from dpm_ppl._model import GaussianDiffusion
    from dpm_ppl._schedules import GeometricSchedule, HarmonicSchedule
    x0 = 1.5 * jax.random.normal(jax.random.key(21), (16, 3))
    out = {}
    for name, sched in [("harmonic", HarmonicSchedule(10)), ("geometric", GeometricSchedule(10, 1e-3, 0.6))]:
        d = GaussianDiffusion((3,), sched, kernel=IsotropicOracle(sched()))
        elbo = DiffusionELBO("trajectory")
        f = jax.jit(jax.vmap(lambda k: (lambda t: t.K - t.log_null)(elbo.terms(k, {}, d.model, d.guide, x0)[0])))
        r = f(jax.random.split(jax.random.key(0), 32))
        out[name] = [float(jnp.abs(r).max()), str(r.dtype)]
    print(json.dumps(out))
    """
)


def test_isotropic_trajectory_bound_float64():
    """The same identity in float64 (a subprocess with JAX_ENABLE_X64=1), T = 10, including a schedule
    with β₁ = 1e-3: |K − log π(x⁰)| ≤ 1e-9 per datum (float64 rounding of O(100)-nat sums is ~1e-13)."""
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", _X64_SCRIPT], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (resid, dtype) in out.items():
        assert dtype == "float64", name
        assert resid <= 1e-9, (name, resid)


def test_isotropic_all_estimator_mean_is_log_prior():
    """Every estimator is unbiased for K(x⁰), and K(x⁰) = log π(x⁰) for the isotropic oracle (per datum,
    for any x⁰), so the "all" estimator's K − L_null averages to 0: per datum and pooled over the
    batch (2000 draws, 4 stderr)."""
    diffusion = isotropic(GeometricSchedule(T, 0.05, 0.6))
    terms = terms_draws("all", {}, diffusion, X0_ISO[:4], 2000, seed=700)
    gap = np.asarray(terms.K - terms.log_null, np.float64)
    m, se = mean_se(gap)
    assert_within_se(m, se, 0.0, "per-datum K - L_null")
    m, se = mean_se(gap.mean(-1))
    assert_within_se(m, se, 0.0, "pooled K - L_null")
    assert np.all(gap.std(0) > 0.01)  # the "all" draws are genuinely random (unlike "trajectory")


# -- Gaussian oracle: the bound sits below the exact log p(x⁰); importance sampling reaches it ----------


def test_gaussian_oracle_bound_below_exact_log_likelihood_and_is_converges():
    """K(x⁰) ≤ log p(x⁰) = log N(x⁰; μ₀, σ₀²) (`marginal_x0`) for several x⁰ (mean of 4000 "all"
    draws ≤ log p + 4 stderr, and the exact closed-form bound is strictly below), while the
    importance-sampling estimate log mean exp(log w), w = p(x⁰…ᵀ)/q(x¹…ᵀ|x⁰) ("trajectory" K draws,
    paper Eqs 6–9), reaches log p(x⁰) within 4 delta-method stderrs plus its O(se²) bias."""
    diffusion, params = oracle_setup()
    oracle = diffusion.kernel
    mu0, s20 = oracle.marginal_x0()
    x0 = np.array([[0.5, -1.0], [1.4, 0.8], [-0.6, -3.0], [2.0, 1.5]])
    log_p = np_log_normal(x0, mu0, s20).sum(-1)
    a, c, w, _ = np_oracle_coefficients(SCHEDULE(), [0.5, -1.0], [0.7, 1.3])
    exact_K = np_exact_bound(x0, np.asarray(SCHEDULE(), np.float64), a, c, w)
    assert np.all(exact_K < log_p)
    K = terms_draws("all", params, diffusion, jnp.asarray(x0, jnp.float32), N_DRAWS, seed=800).K
    m, se = mean_se(K)
    assert np.all(m <= log_p + N_SE * se), (m, log_p, se)
    log_w = terms_draws("trajectory", params, diffusion, jnp.asarray(x0, jnp.float32), 20_000, seed=801).K
    est, se_is = log_mean_exp_se(log_w)
    assert np.all(np.abs(est - log_p) <= N_SE * se_is + se_is**2), (est, log_p, se_is)
    # the IS estimate is a genuinely better estimate than the bound: it closes the gap
    assert np.all(np.abs(est - log_p) < log_p - exact_K)


# -- BoundTerms and edge cases ---------------------------------------------------------------------


def test_bound_terms_bits_and_K():
    """K = −kl + H_T − H_1 + C; bits() divides every term by ln 2; K_minus_Lnull = (K − log π(x⁰))/ln 2."""
    terms = BoundTerms(
        kl=jnp.array([1.0, 2.5]),
        entropy_T=jnp.array([3.0, 3.0]),
        entropy_1=jnp.array([-4.0, -4.0]),
        prior=jnp.array([-2.0, -7.0]),
        log_null=jnp.array([-1.5, -6.0]),
        dim=2,
    )
    np.testing.assert_allclose(terms.K, [4.0, -2.5], rtol=EPS32)
    bits = terms.bits()
    ln2 = math.log(2.0)
    for name in ("kl", "entropy_T", "entropy_1", "prior", "log_null"):
        np.testing.assert_allclose(bits[name], np.asarray(getattr(terms, name)) / ln2, rtol=2 * EPS32)
    np.testing.assert_allclose(bits["K"], np.array([4.0, -2.5]) / ln2, rtol=2 * EPS32)
    np.testing.assert_allclose(bits["K_minus_Lnull"], np.array([5.5, 3.5]) / ln2, rtol=2 * EPS32)


def test_bound_terms_consistency_with_library_closed_forms():
    """The "all" terms hold the closed-form entropies H_q(X^T|x⁰), H_q(X¹|x⁰), C(x⁰) and log π(x⁰)."""
    diffusion, params = oracle_setup()
    terms = terms_draws("all", params, diffusion, X0, 2, seed=900)
    betas = SCHEDULE()
    np.testing.assert_allclose(
        terms.entropy_T, np.broadcast_to(gaussian.entropy_q_T_given_0(betas, 2), (2, 4)), rtol=4 * EPS32
    )
    np.testing.assert_allclose(
        terms.entropy_1, np.broadcast_to(gaussian.entropy_q_1_given_0(betas, 2), (2, 4)), rtol=4 * EPS32
    )
    np.testing.assert_allclose(terms.prior[0], gaussian.bound_constant(X0, betas, 1), rtol=4 * EPS32)
    np.testing.assert_allclose(terms.log_null[0], np_log_normal(np.asarray(X0), 0, 1).sum(-1), rtol=4 * EPS32)
    assert terms.dim == 2 and np.all(np.asarray(terms.kl) > 0)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_single_step_bound_is_log_prior(estimator):
    """T = 1: no KL terms, H_q(X¹|x⁰) = H_q(X^T|x⁰), and C(x⁰) = log π(x⁰), so K = log π(x⁰) exactly;
    Trace_ELBO agrees draw by draw (detailed balance of the single step). float32: 16 eps·|log π|."""
    schedule = ArraySchedule([0.3])
    diffusion = GaussianDiffusion((2,), schedule, kernel=GaussianOracle(schedule(), [0.4, 0.0], [2.0, 0.5]))
    log_null = np_log_normal(np.asarray(X0), 0, 1).sum(-1)
    terms = terms_draws(estimator, {}, diffusion, X0, 3, seed=1000)
    np.testing.assert_allclose(terms.K, np.broadcast_to(log_null, (3, 4)), rtol=16 * EPS32, atol=16 * EPS32)
    trace = loss_draws(Trace_ELBO(), {}, diffusion.model, diffusion.guide, X0, 3, seed=1001)
    np.testing.assert_allclose(trace, -log_null.sum(), rtol=16 * EPS32)


def test_invalid_estimator_and_missing_chain():
    """An unknown estimator is rejected by name and value; a model without a ReverseChain site is refused."""
    with pytest.raises(ValueError, match=r"`estimator` must be one of .*'all'.*got 'bogus'"):
        DiffusionELBO("bogus")

    def model(x0):
        numpyro.sample("x", dist.Normal(0.0, 1.0), obs=x0)

    with pytest.raises(ValueError, match=r"one ReverseChain site .* found 0"):
        DiffusionELBO().loss(jax.random.key(0), {}, model, lambda x0: None, X0)
