"""Binomial diffusion (paper Table App.1, §2.4.1, App. B) against brute-force enumeration.

Every reference here is float64 numpy written from the definitions: per-bit 2×2 forward transition
matrices, joint tables over {0, 1}ᵈ and over whole trajectories, Bayes' rule by summation.
"""

import itertools
import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import N_SE, assert_within_se, mean_se
from numpyro.infer.util import log_density

from dpm_ppl import (
    BernoulliMixtureOracle,
    BernoulliOracle,
    BinomialDiffusion,
    BinomialFamily,
    BinomialReverse,
    DiffusionELBO,
    ForwardChain,
    GeometricSchedule,
    HarmonicSchedule,
    LearnedSchedule,
    ReverseChain,
    bound_terms,
    log_likelihood,
    sample,
)
from dpm_ppl import _binomial as binomial
from dpm_ppl.cli import main
from dpm_ppl.datasets import BinaryHeartbeat, check_binary
from dpm_ppl.nn import MLPNet


T = 4
SCHEDULES = {"harmonic": HarmonicSchedule(T), "geometric": GeometricSchedule(T, 0.05, 0.6)}
RATES = [0.2, 0.5]
STATES = lambda d: np.array(list(itertools.product([0.0, 1.0], repeat=d)))  # noqa: E731


# -- float64 references --------------------------------------------------------------------------


def np_kernel(beta, p):
    """K[a, b] = q(xᵗ = b | xᵗ⁻¹ = a) for one bit: keep with prob 1 − β, else redraw from B(p)."""
    return (1 - beta) * np.eye(2) + beta * np.array([[1 - p, p], [1 - p, p]])


def np_marginal(x0_bit, t, betas, p):
    """q(xᵗ = 1 | x⁰) by multiplying t one-step matrices."""
    row = np.eye(2)[int(x0_bit)]
    for beta in betas[:t]:
        row = row @ np_kernel(beta, p)
    return row[1]


def np_bits_prob(x, rate):
    """∏_i B(x_i; rate_i) for rows of ``x``."""
    return np.prod(np.where(x == 1, rate, 1 - rate), axis=-1)


def np_entropy(probs):
    probs = probs[probs > 0]
    return -np.sum(probs * np.log(probs))


# -- closed forms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("p", RATES)
def test_marginal_composes_forward_kernels(name, p):
    """q(xᵗ|x⁰) = ᾱ_t x⁰ + p(1−ᾱ_t) equals t composed forward kernels x(1−β)+pβ, and the pair
    (rate, 1 − rate) sums to one, at every t = 0…T (float32 vs float64: 1e-6)."""
    betas = SCHEDULES[name]()
    b = np.asarray(betas, np.float64)
    for x0 in (0.0, 1.0):
        rate, one_minus = binomial.forward_kernel(jnp.asarray(x0), betas[0], p)
        np.testing.assert_allclose(float(rate), np_kernel(b[0], p)[int(x0), 1], atol=1e-6)
        for t in range(T + 1):
            rate, one_minus = binomial.marginal(jnp.asarray(x0), t, betas, p)
            np.testing.assert_allclose(float(rate), np_marginal(x0, t, b, p), atol=1e-6)
            np.testing.assert_allclose(float(rate + one_minus), 1.0, atol=1e-6)


def test_harmonic_schedule_erases_the_signal():
    """β_t = 1/(T−t+1) gives ᾱ_t = (T−t)/T; β_T is clipped to 1 − 10⁻⁶, so ᾱ_T ≈ 0 and
    q(x^T|x⁰) = B(p) for either x⁰ to 10⁻⁶."""
    betas = HarmonicSchedule(T)()
    for t in range(T):
        np.testing.assert_allclose(float(binomial.alpha_bar(betas)[t]), (T - t) / T, rtol=1e-5)
    for x0 in (0.0, 1.0):
        np.testing.assert_allclose(float(binomial.marginal(jnp.asarray(x0), T, betas, 0.2)[0]), 0.2, atol=1e-6)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("p", RATES)
def test_posterior_is_bayes_rule(name, p):
    """q(xᵗ⁻¹|xᵗ,x⁰) = q(xᵗ⁻¹|x⁰)q(xᵗ|xᵗ⁻¹) / Σ_{xᵗ⁻¹}(…) by enumeration, for every x⁰, xᵗ, t ≥ 2."""
    betas = SCHEDULES[name]()
    b = np.asarray(betas, np.float64)
    for x0, xt, t in itertools.product((0.0, 1.0), (0.0, 1.0), range(2, T + 1)):
        prev = np.array([1 - np_marginal(x0, t - 1, b, p), np_marginal(x0, t - 1, b, p)])
        joint = prev * np_kernel(b[t - 1], p)[:, int(xt)]
        expected = joint[1] / joint.sum()
        got = jax.nn.sigmoid(binomial.posterior_logit(jnp.asarray(x0), jnp.asarray(xt), t, betas, p))
        np.testing.assert_allclose(float(got), expected, rtol=1e-5, atol=1e-7)


def test_kl_and_entropy_of_bernoullis():
    """KL(B(q)‖B(r)) and H₂ from logits/rates equal their defining sums (including q at 10⁻⁶ of 0 and 1)."""
    q = np.array([1e-6, 0.2, 0.5, 0.9, 1 - 1e-6])
    r = np.array([0.3, 0.01, 0.5, 0.99, 0.5])
    expected = q * np.log(q / r) + (1 - q) * np.log((1 - q) / (1 - r))
    logit = lambda a: jnp.asarray(np.log(a) - np.log1p(-a), jnp.float32)  # noqa: E731
    np.testing.assert_allclose(binomial.kl_bernoulli(logit(q), logit(r)), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(binomial.kl_bernoulli(logit(q), logit(q)), 0.0, atol=1e-6)
    h = -(q * np.log(q) + (1 - q) * np.log1p(-q))
    # 1 − 10⁻⁶ is stored in float32 with an absolute error of 6·10⁻⁸, so log(1 − q) carries ~1e-8 absolute
    np.testing.assert_allclose(binomial.entropy_bernoulli(jnp.asarray(q), jnp.asarray(1 - q)), h, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("p", RATES)
def test_entropies_prior_and_bound_constant_by_enumeration(name, p):
    """For d = 3: H_q(X^T|x⁰), H_q(X¹|x⁰), log π(x⁰) and C(x⁰) = E log π(x^T) + log π(x⁰) − E log π(x¹)
    equal sums over all 8 states of the joint q(xᵗ|x⁰) = ∏_i q(xᵗ_i|x⁰_i)."""
    betas = SCHEDULES[name]()
    b = np.asarray(betas, np.float64)
    states = STATES(3)
    x0 = states  # every x⁰ ∈ {0,1}³
    log_pi = np.log(np_bits_prob(states, np.full(3, p)))
    for t, fn in ((T, binomial.entropy_q_T_given_0), (1, binomial.entropy_q_1_given_0)):
        want = [np_entropy(np_bits_prob(states, np.array([np_marginal(v, t, b, p) for v in x]))) for x in x0]
        np.testing.assert_allclose(fn(jnp.asarray(x0), betas, p, 1), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(binomial.log_prior(jnp.asarray(x0), p, 1), log_pi, rtol=1e-6)

    def expected_log_pi(x, t):
        return np.sum(np_bits_prob(states, np.array([np_marginal(v, t, b, p) for v in x])) * log_pi)

    want_c = [expected_log_pi(x, T) + lp - expected_log_pi(x, 1) for x, lp in zip(x0, log_pi)]
    np.testing.assert_allclose(binomial.bound_constant(jnp.asarray(x0), betas, p, 1), want_c, rtol=1e-5, atol=1e-5)
    # L_null of Table 1 for the heartbeat: 20·log B(·; 0.2) averaged over data at rate 0.2 = −20·H₂(0.2)
    heart = BinaryHeartbeat().sequences()
    l_null_bits = float(binomial.log_prior(jnp.asarray(heart), 0.2, 1).mean()) / math.log(2)
    np.testing.assert_allclose(l_null_bits, -2.414 - 12.024, atol=1e-3)


@pytest.mark.parametrize("p", RATES)
def test_last_step_is_the_time_reversal_of_the_first(p):
    """p(x⁰|x¹) = q(x¹|x⁰)π(x⁰)/π(x¹) (App. B.2, Eq 44) equals the forward kernel's form x¹(1−β₁)+pβ₁."""
    beta1 = 0.07
    k = np_kernel(beta1, p)
    pi = np.array([1 - p, p])
    for x1 in (0, 1):
        want = k[1, x1] * pi[1] / pi[x1]
        rate, one_minus = binomial.last_step(jnp.asarray(float(x1)), beta1, p)
        np.testing.assert_allclose(float(rate), want, rtol=1e-6)
        np.testing.assert_allclose(float(one_minus), 1 - want, rtol=1e-5)


# -- the bound by enumeration of whole trajectories --------------------------------------------------

D, TB = 2, 3  # {0,1}^(D·TB) = 64 forward trajectories per datum
P = 0.3


def _table_kernel():
    """An arbitrary reverse kernel: a logit per (t, xᵗ state, bit), looked up."""
    table = jax.random.normal(jax.random.key(7), (TB + 1, 2**D, D)) * 1.5

    def kernel(x_t, t):
        idx = jnp.sum(x_t.astype(jnp.int32) * (2 ** jnp.arange(D - 1, -1, -1)))
        return table[t, idx]

    return kernel, np.asarray(table, np.float64)


def _exact_bound(x0, betas, table, p):
    """E_q[log p(x⁰…ᵀ) − log q(x¹…ᵀ|x⁰)] by summing over all forward trajectories (float64)."""
    b = np.asarray(betas, np.float64)
    states = STATES(D)
    total = 0.0
    for traj in itertools.product(range(2**D), repeat=TB):
        xs = [np.asarray(x0, np.float64)] + [states[i] for i in traj]  # x⁰…x^T
        log_q = sum(
            np.log(np_bits_prob(xs[t], np_kernel(b[t - 1], p)[xs[t - 1].astype(int), 1])) for t in range(1, TB + 1)
        )
        log_p = np.log(np_bits_prob(xs[TB], np.full(D, p)))
        for t in range(2, TB + 1):
            rate = 1 / (1 + np.exp(-table[t, traj[t - 1]]))
            log_p += np.log(np_bits_prob(xs[t - 1], rate))
        log_p += np.log(np_bits_prob(xs[0], xs[1] * (1 - b[0]) + p * b[0]))  # the fixed last step
        total += np.exp(log_q) * (log_p - log_q)
    return total


def test_bound_estimators_match_enumeration():
    """K(x⁰) from the closed forms ("all", "stratified") and from whole trajectories ("trajectory") agrees
    with the exact E_q[log p(x⁰…ᵀ) − log q(x¹…ᵀ|x⁰)] summed over all 64 trajectories, for an arbitrary
    kernel (MC means of 4 000 draws, 4 standard errors)."""
    betas = GeometricSchedule(TB, 0.1, 0.5)()
    kernel, table = _table_kernel()
    family = BinomialFamily(P)
    x0 = jnp.asarray(STATES(D))
    exact = np.array([_exact_bound(x, betas, table, P) for x in np.asarray(x0)])
    n = 4_000
    for estimator in ("all", "stratified", "trajectory"):
        draw = jax.jit(jax.vmap(lambda k: bound_terms(k, x0, betas, kernel, 1, estimator, family=family).K))
        K = np.asarray(draw(jax.random.split(jax.random.key(3), n)))
        m, se = mean_se(K)
        assert_within_se(m, se + 1e-6, exact, f"K ({estimator})")


def test_analytic_bound_matches_model_minus_guide_log_density():
    """Trace_ELBO cannot reparameterise Bernoulli sites, but the analytic bound must equal the Monte-Carlo
    mean of log p(x⁰…ᵀ) − log q(x¹…ᵀ|x⁰) from `numpyro.infer.util.log_density` of the model and the guide
    on guide samples (same parameters; 2 000 trajectories, 4 standard errors)."""
    net = lambda x, t: jnp.sin(3.0 * x + t) - 0.5  # noqa: E731  a fixed non-trivial network
    d = BinomialDiffusion((3,), HarmonicSchedule(5), kernel=None, network=net, base_rate=P, trainable=False)
    x0 = jnp.asarray(STATES(3))
    elbo = DiffusionELBO("all")

    def analytic(k):
        terms, _, _ = elbo.terms(k, {}, d.model, d.guide, x0)
        return terms.K

    def mc(k):
        traj = ForwardChain(x0, d.betas(), 1, family=d.family).sample(k)
        params = {"trajectory": traj}
        lp_model, _ = log_density(d.model, (x0,), {}, params)
        lp_guide, _ = log_density(d.guide, (x0,), {}, params)
        return lp_model - lp_guide  # summed over the batch

    n = 2_000
    keys = jax.random.split(jax.random.key(5), n)
    K = np.asarray(jax.jit(jax.vmap(analytic))(keys)).sum(-1)
    W = np.asarray(jax.jit(jax.vmap(mc))(keys))
    (mk, sk), (mw, sw) = mean_se(K), mean_se(W)
    assert_within_se(mk, math.hypot(sk, sw), mw, "analytic K vs log p − log q")


# -- oracles --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", RATES)
def test_base_rate_oracle_gives_K_equal_L_null(p):
    """For data at the base rate the exact time reversal is the forward kernel itself (π-reversibility):
    the oracle equals it, and every trajectory's log weight is log π(x⁰): K = L_null to float precision
    (T = 6, d = 5: 2·10⁻⁴ nats of float32 rounding over ~60 terms)."""
    betas = HarmonicSchedule(6)()
    oracle = BernoulliOracle(betas, np.full(5, p), p)
    x = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0])
    for t in range(2, 7):
        want = binomial.rate_logit(*binomial.forward_kernel(x, betas[t - 1], p))
        np.testing.assert_allclose(oracle(x, t), want, rtol=1e-4, atol=1e-4)
    x0 = jax.random.bernoulli(jax.random.key(1), p, (64, 5)).astype(jnp.float32)
    terms = bound_terms(jax.random.key(2), x0, betas, oracle, 1, "trajectory", family=BinomialFamily(p))
    np.testing.assert_allclose(terms.K, terms.log_null, atol=2e-4)
    np.testing.assert_allclose(oracle.marginal_x0(), p, atol=1e-6)


def test_independent_bits_oracle_bound_below_exact_log_likelihood():
    """Independent bits with rates q ≠ p: the oracle's p(x⁰) is known in closed form (`marginal_x0`,
    checked against ancestral samples); K(x⁰) ≤ log p(x⁰) for each x⁰ ("all", 2 000 draws, MC
    tolerance), the gap is the last step's (small), and importance sampling recovers log p(x⁰)."""
    Tq, q, p = 8, np.array([0.05, 0.5, 0.9, 0.3]), 0.3
    betas = HarmonicSchedule(Tq)()
    oracle = BernoulliOracle(betas, q, p)
    r0 = oracle.marginal_x0()
    n = 40_000
    k_chain, k_last = jax.random.split(jax.random.key(4))
    family = BinomialFamily(p)
    traj = jax.jit(lambda k: ReverseChain(oracle, betas, (n,), (4,), family=family).sample(k))(k_chain)
    x1 = traj[:, 0]
    x0_draw = family.reverse_step(family.last_step(x1, betas[0]), family.noise(k_last, x1.shape, x1.dtype))
    m, se = mean_se(np.asarray(x0_draw))
    assert_within_se(m, se, r0, "oracle p(x0) rates")
    x0 = jnp.asarray(STATES(4))
    exact = oracle.log_prob_x0(np.asarray(x0))
    draw = jax.jit(jax.vmap(lambda k: bound_terms(k, x0, betas, oracle, 1, "all", family=family).K))
    K = np.asarray(draw(jax.random.split(jax.random.key(6), 2_000)))
    mk, sk = mean_se(K)
    assert np.all(mk <= exact + 4 * sk), (mk, exact)
    model = BinomialDiffusion((4,), HarmonicSchedule(Tq), kernel=oracle, base_rate=p)
    est = log_likelihood(model, np.asarray(x0), jax.random.key(8), num_trajectories=512)
    assert_within_se(est.log_p_hat, est.stderr + 1e-5, exact, "IS log p(x0) vs closed form")


def np_reverse_bit_rates(atoms, weights, t, betas, p):
    """q(xᵗ⁻¹_i = 1 | xᵗ) for every xᵗ ∈ {0,1}ᵈ, by summing the joint table of (x⁰, xᵗ⁻¹, xᵗ): shape (2ᵈ, d)."""
    d = atoms.shape[1]
    states = STATES(d)
    prev = np.array([[np_marginal(a, t - 1, betas, p) for a in atom] for atom in atoms])  # (K, d)
    p_prev = np.stack([np_bits_prob(states, r) for r in prev])  # q(xᵗ⁻¹ = state | x⁰ = atom)
    k = np_kernel(betas[t - 1], p)
    step = np.prod(k[states[:, None, :].astype(int), states[None, :, :].astype(int)], axis=-1)  # [prev, next]
    joint = (weights[:, None, None] * p_prev[:, :, None] * step[None]).sum(0)  # (prev, next)
    return (joint.T @ states) / joint.sum(0)[:, None]


def test_mixture_oracle_is_the_exact_bit_marginal_of_the_reverse():
    """The oracle's rates are q(xᵗ⁻¹_i = 1 | xᵗ) of finite-support data (3 atoms, unequal weights), by
    enumeration of the joint table at every xᵗ and t; being those marginals, they minimise each step's
    expected KL among kernels with independent bits."""
    atoms = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0]], float)
    weights, p = np.array([0.5, 0.3, 0.2]), 0.3
    betas = np.asarray(GeometricSchedule(T, 0.05, 0.6)(), np.float64)
    oracle = BernoulliMixtureOracle(betas, atoms, weights, p)
    rates = jax.jit(jax.vmap(lambda x, t: jax.nn.sigmoid(oracle(x, t)), in_axes=(0, None)))
    for t in range(2, T + 1):
        want = np_reverse_bit_rates(atoms, weights, t, betas, p)
        np.testing.assert_allclose(rates(jnp.asarray(STATES(4)), t), want, rtol=2e-5, atol=1e-6)


def test_mixture_oracle_over_all_states_with_product_weights_is_the_bernoulli_oracle():
    q, p = np.array([0.1, 0.6, 0.85]), 0.2
    betas = HarmonicSchedule(5)()
    atoms = STATES(3)
    on_states = lambda kernel: jax.jit(jax.vmap(kernel, in_axes=(0, None)))  # noqa: E731
    mixture = on_states(BernoulliMixtureOracle(betas, atoms, np_bits_prob(atoms, q), p))
    independent = on_states(BernoulliOracle(betas, q, p))
    for t in range(2, 6):
        np.testing.assert_allclose(
            mixture(jnp.asarray(atoms), t), independent(jnp.asarray(atoms), t), rtol=1e-4, atol=1e-4
        )


def test_mixture_oracle_bounds_a_heartbeat():
    """Short heartbeats (length 10, period 5, T = 20): with one atom the reversal is exact and every
    KL term is 0; with the 5 sequences the oracle's K lies below log p(x⁰) = −log 5, by the bits'
    correlations that a kernel with independent bits cannot carry (0.9 nats at this short T)."""
    data = BinaryHeartbeat(length=10, period=5, num_train=10, num_test=10)
    atoms, betas, family = data.sequences(), HarmonicSchedule(20)(), BinomialFamily(0.2)
    x0 = jnp.asarray(atoms)

    def terms(kernel, keys):
        return jax.jit(jax.vmap(lambda k: bound_terms(k, x0, betas, kernel, 1, "all", family=family)))(keys)

    keys = jax.random.split(jax.random.key(1), 50)
    exact = terms(BernoulliMixtureOracle(betas, atoms[:1], p=0.2), keys)
    np.testing.assert_allclose(exact.kl[:, 0], 0.0, atol=1e-4)
    k_mix, se_mix = mean_se(np.asarray(terms(BernoulliMixtureOracle(betas, atoms, p=0.2), keys).K).mean(1))
    assert k_mix + N_SE * se_mix < -math.log(5), (k_mix, se_mix)


def test_mixture_oracle_rejects_bad_atoms_and_weights():
    betas = HarmonicSchedule(3)()
    with pytest.raises(ValueError, match=r"`atoms` must hold 0s and 1s .* shape \(4,\)"):
        BernoulliMixtureOracle(betas, np.array([0, 1, 1, 0]))
    with pytest.raises(ValueError, match=r"`atoms` must hold 0s and 1s"):
        BernoulliMixtureOracle(betas, np.array([[0, 2]]))
    with pytest.raises(ValueError, match=r"`weights` must be 2 non-negative numbers"):
        BernoulliMixtureOracle(betas, np.eye(2), weights=[1.0, -1.0])


# -- declaration, sampling, data at the door -------------------------------------------------------------


def test_binomial_model_samples_are_binary_and_declaration_is_checked():
    """`sample` on a BinomialDiffusion returns {0,1} data of the event shape; a learned schedule and a base
    rate outside (0, 1) are refused with clear messages."""
    kernel, _ = _table_kernel()
    d = BinomialDiffusion((D,), HarmonicSchedule(TB), kernel=kernel, base_rate=P)
    drawn = sample(d, jax.random.key(0), 50, trajectory=True)
    assert drawn.x0.shape == (50, D) and drawn.trajectory.shape == (50, TB, D)
    assert set(np.unique(np.asarray(drawn.trajectory))) <= {0.0, 1.0}
    assert set(np.unique(np.asarray(drawn.x0))) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="fixed schedule"):
        BinomialDiffusion((D,), LearnedSchedule(HarmonicSchedule(TB)), kernel=kernel)
    with pytest.raises(ValueError, match=r"base rate `p` must lie strictly inside \(0, 1\), got 1.5"):
        BinomialFamily(1.5)
    with pytest.raises(ValueError, match=r"`rate` must be one of \['paper', 'x0'\], got 'bogus'"):
        BinomialReverse(lambda x, t: x, HarmonicSchedule(3)(), 0.5, "bogus")


def test_binary_data_checked_at_the_door():
    """A value outside {0, 1} is a ValueError naming the first offending entry's index and value, from the
    check itself, the family, and `log_likelihood`."""
    x = np.zeros((4, 3))
    x[2, 1], x[3, 0] = 0.5, 2.0
    with pytest.raises(ValueError, match=r"0\.5 at index \(2, 1\) \(2 such entries"):
        check_binary(x, "x")
    with pytest.raises(ValueError, match=r"`train data` must be binary .* 0\.5 at index \(2, 1\)"):
        BinomialFamily(0.2).check_data(x, (3,), "train data")
    d = BinomialDiffusion((3,), HarmonicSchedule(3), kernel=BernoulliOracle(HarmonicSchedule(3)(), 0.2, 0.2))
    with pytest.raises(ValueError, match=r"`x0` must be binary .* at index \(2, 1\)"):
        log_likelihood(d, x, jax.random.key(0), num_trajectories=2)
    check_binary(np.eye(3))  # valid data pass


def test_binary_heartbeat_dataset():
    """Five distinct sequences with a 1 every 5th bin; log p = log(1/5) on them, −∞ elsewhere; each bin is
    1 at the base rate 0.2; data are not rescaled by the family's split."""
    data = BinaryHeartbeat(num_train=500, num_test=100)
    seqs = data.sequences()
    assert seqs.shape == (5, 20) and len({tuple(s) for s in seqs}) == 5
    assert np.all(seqs.sum(1) == 4) and np.allclose(seqs.mean(0), 0.2)
    np.testing.assert_allclose(data.true_log_prob(seqs), -math.log(5))
    bad = seqs[:1].copy()
    bad[0, 0] = 1 - bad[0, 0]
    assert data.true_log_prob(bad)[0] == -np.inf
    split = data.split(0, check=BinomialFamily(0.2).check_data, standardise=False)
    assert split.standardiser.scale == 1.0 and set(np.unique(split.train)) == {0.0, 1.0}
    assert np.all(data.is_valid(split.test)) and data.sample_summary(split.test) == {"valid_sample_fraction": 1.0}
    counts = np.bincount(np.argmax(split.train[:, :5], axis=1), minlength=5)
    assert np.all(np.abs(counts - 100) < 4 * math.sqrt(100 * 0.8))  # uniform phase


def test_untrained_network_kernel_is_the_forward_kernel():
    """`BinomialReverse` ("x0") with a zero-initialised readout is the forward kernel, the time reversal
    of the π-stationary chain, so every trajectory's log weight is log π(x⁰): K = L_null on any binary data
    (heartbeat sequences, T = 12; float32 rounding 2·10⁻⁴ nats)."""
    T_ = 12
    net = MLPNet(20, T_, width=8, depth=1, heads=1, key=jax.random.key(0))
    d = BinomialDiffusion((20,), HarmonicSchedule(T_), network=net, base_rate=0.2, trainable=False)
    betas = d.betas()
    kernel = d.reverse_kernel(betas)
    x = jnp.asarray(BinaryHeartbeat().sequences()[2])
    for t in range(2, T_ + 1):
        want = binomial.rate_logit(*binomial.forward_kernel(x, betas[t - 1], 0.2))
        np.testing.assert_allclose(kernel(x, t), want, rtol=1e-4, atol=1e-4)
    x0 = jnp.asarray(BinaryHeartbeat().sequences())
    terms = bound_terms(jax.random.key(1), x0, betas, kernel, 1, "trajectory", family=d.family)
    np.testing.assert_allclose(terms.K, terms.log_null, atol=2e-4)


def test_papers_heartbeat_network_is_one_line_away():
    """App. D.1.2's network: 3 hidden layers of 50 sigmoid units shared across t, t not an input, a separate
    readout per step; with ``rate="paper"`` the reverse rate is f_b = σ(network output) itself."""
    T_ = 30
    net = MLPNet(20, T_, width=50, depth=3, activation=jax.nn.sigmoid, time_features=False, heads=1,
                 key=jax.random.key(0))  # fmt: skip
    assert [(layer.in_features, layer.out_features) for layer in net.layers] == [(20, 50), (50, 50), (50, 50)]
    assert net.time_basis is None and net.readout.weight.shape == (T_, 20, 50)
    readout = jax.random.normal(jax.random.key(1), net.readout.weight.shape)
    net = eqx.tree_at(lambda n: n.readout.weight, net, readout)
    d = BinomialDiffusion((20,), HarmonicSchedule(T_), network=net, base_rate=0.2, rate="paper", trainable=False)
    kernel = d.reverse_kernel(d.betas())
    x = jnp.asarray(BinaryHeartbeat().sequences()[1])
    for t in (2, 17, T_):
        h = x
        for layer in net.layers:
            h = jax.nn.sigmoid(layer(h))
        np.testing.assert_allclose(kernel(x, t), readout[t - 1] @ h, rtol=1e-5, atol=1e-5)


BAD_BINARY_SCRIPT = """
import importlib.util
import numpy as np
from dpm_ppl.datasets import BinaryHeartbeat
from dpm_ppl import Experiment
from dpm_ppl import TrainConfig
spec = importlib.util.spec_from_file_location("heartbeat", {script!r})
heartbeat = importlib.util.module_from_spec(spec); spec.loader.exec_module(heartbeat)

class Bad(BinaryHeartbeat):
    def raw(self, seed):
        train, test = super().raw(seed)
        train[3, 1] = 0.5
        return train, test

experiment = Experiment("bad", Bad(num_train=20, num_test=10), heartbeat.model, 5, TrainConfig(steps=2))
"""


def test_dpm_fit_refuses_non_binary_data(tmp_path, capsys):
    """`dpm fit` on a binomial model stops before training, naming the first non-binary entry and its value."""
    heartbeat = Path(__file__).resolve().parents[1] / "models" / "binary_heartbeat.py"
    script = tmp_path / "bad.py"
    script.write_text(BAD_BINARY_SCRIPT.format(script=str(heartbeat)))
    assert main(["fit", str(script), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "must be binary" in err and "0.5 at index (3, 1)" in err
