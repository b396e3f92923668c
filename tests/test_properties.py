"""Property tests (hypothesis) on the closed forms of both kernel families, and float32 stability at T = 4000.

For arbitrary schedules, data and steps drawn by hypothesis:

- every KL is ≥ 0 (and 0 between equal distributions), and equals its float64 closed form.

The properties every kernel family shares (Bayes' rule, composed kernels, entropies, …) are the contract table
of `test_families.py`, run over every family.

Runs are derandomised (a fixed sequence of examples), so a statistical check cannot flake.
Tolerances for float32: a sum of terms of size ≤ M carries rounding ≲ k·eps32·M.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EPS32
from hypothesis import given, settings
from hypothesis import strategies as st

from dpm_ppl import BinomialDiffusion, GaussianDiffusion, GaussianOracle, HarmonicSchedule, IsotropicOracle, sample
from dpm_ppl import _binomial as binomial
from dpm_ppl import _gaussian as gaussian
from dpm_ppl.infer import _train as train
from dpm_ppl.nn import _mlp as nn


PROPERTY = settings(max_examples=50, deadline=None, derandomize=True, database=None)  # no example database
D = 3  # coordinates per example (a fixed shape: one compilation per schedule length)
N_MC = 20_000  # Monte-Carlo draws per entropy check
N_SE = 5.0

betas_st = st.lists(st.floats(1e-3, 0.99), min_size=2, max_size=12).map(lambda b: np.asarray(b, np.float32))
coords = st.lists(st.floats(-5.0, 5.0), min_size=D, max_size=D).map(lambda x: np.asarray(x, np.float32))
bits = st.lists(st.sampled_from([0.0, 1.0]), min_size=D, max_size=D).map(lambda x: np.asarray(x, np.float32))
rates = st.floats(0.1, 0.9)


def _np(x):
    return np.asarray(x, np.float64)


# -- KL ≥ 0 -------------------------------------------------------------------------------------------


@PROPERTY
@given(
    st.floats(-10, 10), st.floats(1e-3, 10), st.floats(-10, 10), st.floats(1e-3, 10)
)  # fmt: skip
def test_gaussian_kl_non_negative(mean_q, var_q, mean_p, var_p):
    """KL(N(μ̃, σ̃²) ‖ N(μ, σ²)) ≥ 0, up to float32 rounding of its terms; = 0 for equal arguments; equal to
    the float64 closed form."""
    kl = float(gaussian.kl_normal(jnp.float32(mean_q), jnp.float32(var_q), jnp.float32(mean_p), jnp.float32(var_p)))
    size = abs(math.log(var_p)) + abs(math.log(var_q)) + (var_q + (mean_q - mean_p) ** 2) / var_p + 1.0
    assert kl >= -8 * EPS32 * size
    ref = 0.5 * (math.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)
    assert abs(kl - ref) <= 16 * EPS32 * size
    same = float(gaussian.kl_normal(jnp.float32(mean_q), jnp.float32(var_q), jnp.float32(mean_q), jnp.float32(var_q)))
    assert abs(same) <= 8 * EPS32 * size


@PROPERTY
@given(st.floats(-15, 15), st.floats(-15, 15))
def test_bernoulli_kl_non_negative(logit_q, logit_r):
    """KL(B(q) ‖ B(r)) ≥ 0 from logits, up to float32 rounding; = 0 for equal arguments."""
    kl = float(binomial.kl_bernoulli(jnp.float32(logit_q), jnp.float32(logit_r)))
    size = abs(logit_q) + abs(logit_r) + 1.0
    assert kl >= -8 * EPS32 * size
    assert abs(float(binomial.kl_bernoulli(jnp.float32(logit_q), jnp.float32(logit_q)))) <= 8 * EPS32 * size


# -- float32 stability at T = 4000 --------------------------------------------------------------------

T_LONG = 4000


def _finite(terms):
    return {name: bool(np.all(np.isfinite(np.asarray(getattr(terms, name))))) for name in terms._fields[:-1]}


@pytest.mark.parametrize("kernel", ["isotropic", "gaussian_oracle", "mlp"])
def test_gaussian_float32_stable_at_T_4000(kernel):
    """Harmonic schedule, T = 4000, float32: every bound term (estimators "all" and "trajectory") and every
    sample is finite, for both oracles and an untrained MLPNet. The isotropic oracle is the exact reversal
    of x⁰ ~ N(0, I), so its per-datum "trajectory" K − L_null is 0 in exact arithmetic (and to 1e-12 in
    float64). In float32 the error grows about as T²·eps (measured on 8 data: ≤ 3e-5 nats at T = 100,
    ≤ 2e-3 at T = 1000, ≤ 0.022 at T = 4000): allow 0.05 nats, 2% of |L_null| for d = 2."""
    schedule = HarmonicSchedule(T_LONG)
    betas = schedule()
    if kernel == "isotropic":
        diffusion = GaussianDiffusion((2,), schedule, kernel=IsotropicOracle(betas))
    elif kernel == "gaussian_oracle":
        diffusion = GaussianDiffusion((2,), schedule, kernel=GaussianOracle(betas, [0.5, -1.0], [0.3, 2.0]))
    else:
        net = nn.MLPNet(2, T_LONG, width=16, depth=2, key=jax.random.key(0))
        diffusion = GaussianDiffusion((2,), schedule, network=net, trainable=False)  # as `bind` leaves it
    x0 = np.asarray(jax.random.normal(jax.random.key(1), (8, 2)))
    # "trajectory" (the per-datum log weight of importance sampling) only where it has an exact answer
    for estimator in ("all", "trajectory") if kernel == "isotropic" else ("all",):
        terms = train.evaluate_bound(diffusion, {}, x0, jax.random.key(2), estimator=estimator, batch_size=8)
        assert all(_finite(terms).values()), (estimator, _finite(terms))
        if estimator == "trajectory":
            np.testing.assert_allclose(_np(terms.K - terms.log_null), 0.0, atol=0.05)
    drawn = sample(diffusion, jax.random.key(3), 128, trajectory=True)
    assert np.all(np.isfinite(np.asarray(drawn.x0))) and np.all(np.isfinite(np.asarray(drawn.trajectory)))


def test_binomial_float32_stable_at_T_4000():
    """The same for binomial diffusion with an untrained MLPNet (harmonic schedule, T = 4000, rates within
    ~1/T of 0 and 1): finite bound terms, binary samples."""
    schedule = HarmonicSchedule(T_LONG)
    basis = nn.TemporalBasis(T_LONG, num_basis=20)
    net = nn.MLPNet(4, T_LONG, width=16, depth=2, basis=basis, heads=1, key=jax.random.key(0))
    diffusion = BinomialDiffusion((4,), schedule, network=net, base_rate=0.2, trainable=False)
    x0 = (np.asarray(jax.random.uniform(jax.random.key(1), (8, 4))) < 0.4).astype(np.float32)
    terms = train.evaluate_bound(diffusion, {}, x0, jax.random.key(2), estimator="all", batch_size=8)
    assert all(_finite(terms).values()), _finite(terms)
    drawn = sample(diffusion, jax.random.key(3), 128)
    assert np.all(np.isin(np.asarray(drawn.x0), (0.0, 1.0)))
