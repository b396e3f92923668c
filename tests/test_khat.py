"""PSIS k̂ of discrete importance weights (`psis_khat`, `log_likelihood(...).khat`): tied log weights are spread
before the generalized-Pareto fit, continuous weights keep arviz-stats' k̂ bit for bit.

Every check uses M = 10 000 weights per row, so PSIS fits the n_tail = ⌊3√M⌋ = 300 largest. The sampling
sd of k̂ is about (1 + k)/√n_tail ≤ 0.13 for k ≤ 1.25, and arviz's prior pulls k̂ towards 0.5 by
|0.5 − k|·10/(n_tail + 10); the thresholds below sit several such sds from the measured values.
"""

import math
import warnings

import jax
import numpy as np
import pytest
from arviz_stats.base import array_stats
from helpers import EPS32, N_SE, assert_within_se, mean_se

from dpm_ppl import BernoulliOracle, BinomialDiffusion, HarmonicSchedule, log_likelihood
from dpm_ppl.infer import KHAT_THRESHOLD, psis_khat


M = 10_000
N_TAIL = math.floor(3 * math.sqrt(M))
FINITE_VARIANCE = 0.5  # k < ½ ⇔ finite variance of the weights


def direct_khat(log_w):
    """arviz-stats' k̂ of each row's weights exp(log_w) with no tie handling (this module's previous k̂)."""
    out = []
    for row in np.atleast_2d(np.asarray(log_w, np.float64)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fit's own warnings on degenerate (tied) tails
            try:
                out.append(float(array_stats.psislw(-row, r_eff=1.0)[1]))
            except ValueError:  # "All tail values are the same"
                out.append(-math.inf)
    return np.array(out)


@pytest.mark.parametrize("alpha", [1.25, 2.5, 5.0])
def test_continuous_pareto_weights_keep_arviz_khat_and_recover_one_over_alpha(alpha):
    """w = U^(−1/α) has P(w > y) = y^(−α) for y ≥ 1: tail shape k = 1/α exactly (0.8, 0.4, 0.2).

    No two log weights are tied, so k̂ is arviz-stats' direct fit, bit for bit. Over 16 rows, mean k̂ = 1/α
    within N_SE standard errors plus the prior's shrinkage |0.5 − k|·10/(n_tail + 10). The same weights
    rounded to float32 have a few near-ties (equal to float32 precision) that are spread: that moves
    isolated order statistics by a fraction of the tail's spacing, so k̂ moves by ≪ 1/n_tail.
    """
    rows, k = 16, 1.0 / alpha
    lw = -np.log(np.random.default_rng(11).uniform(size=(rows, M))) / alpha
    khat = psis_khat(lw)
    np.testing.assert_array_equal(khat, direct_khat(lw))
    mean, se = mean_se(khat)
    assert abs(mean - k) <= N_SE * se + abs(0.5 - k) * 10 / (N_TAIL + 10), (mean, se, k)
    lw32 = lw.astype(np.float32)
    np.testing.assert_allclose(psis_khat(lw32), direct_khat(lw32), atol=0.1 / N_TAIL, rtol=0)


DISCRETE = {  # weight values and their probabilities: bounded support, so the true k is −∞ (all moments finite)
    "three values": ([1.0, 2.0, 3.0], [0.9, 0.09, 0.01]),
    "six values": ([0.1, 0.3, 1.0, 1.5, 2.2, 5.0], [0.3, 0.3, 0.2, 0.15, 0.04, 0.01]),
}


@pytest.mark.parametrize("name", DISCRETE)
def test_discrete_weights_of_finite_variance_get_a_small_khat(name):
    """Weights taking a handful of values (relative variance 0.10 and 1.17): ties everywhere, an atom at the cutoff.

    arviz-stats' direct fit fails on every row (NaN: the exceedances' first quartile is 0), and on the same
    weights with float32 rounding instead of exact ties (values within a few ulps, as log weights summed
    in float32 are) it gives k̂ ≈ 6. Spread, every row has k̂ ≤ ½ (measured ≤ −0.15, > 5 sds below ½),
    and the rounded weights give the same k̂ as the exact ties (atoms' means differ by ~1e-7).
    """
    values, probs = (np.asarray(a, np.float64) for a in DISCRETE[name])
    mean = (values * probs).sum()
    assert ((values - mean) ** 2 * probs).sum() / mean**2 < 1.2  # finite (small) relative variance
    rng = np.random.default_rng(12)
    lw = np.log(values)[rng.choice(len(values), size=(8, M), p=probs)]
    khat = psis_khat(lw)
    assert np.all(khat <= FINITE_VARIANCE), khat
    assert np.all(np.isnan(direct_khat(lw))), direct_khat(lw)
    rounded = (lw + rng.uniform(-1e-6, 1e-6, lw.shape)).astype(np.float32)
    assert np.all(direct_khat(rounded) > KHAT_THRESHOLD), direct_khat(rounded)
    np.testing.assert_allclose(psis_khat(rounded), khat, atol=1e-4, rtol=0)
    # float32 numbers held in float64 (e.g. `log_weights(...)` cast up) are tied at float32's precision too
    np.testing.assert_array_equal(psis_khat(rounded.astype(np.float64)), psis_khat(rounded))


@pytest.mark.parametrize("alpha", [0.8, 4.0])
def test_discrete_power_law_tail_keeps_its_index(alpha):
    """w = 2^J with P(J = j) ∝ 2^(−αj), j ≥ 0: P(w > y) ∝ y^(−α), a lattice tail of index k = 1/α.

    α = 0.8 (k = 1.25, infinite variance): every row's k̂ > 0.7 and so is mean k̂ by N_SE standard errors
    (measured mean 1.08: spreading over the mean spacing, ≥ log 2 where the far tail skips values of J,
    and the prior pull it down). α = 4 (k = 0.25): every row's k̂ < ½. The direct fit is NaN on all rows.
    """
    rows = 8
    j = np.random.default_rng(13).geometric(1.0 - 2.0**-alpha, size=(rows, M)) - 1
    lw = j * math.log(2.0)
    khat = psis_khat(lw)
    mean, se = mean_se(khat)
    if alpha < 1:
        assert np.all(khat > KHAT_THRESHOLD) and mean - N_SE * se > KHAT_THRESHOLD, (khat, mean, se)
    else:
        assert np.all(khat < FINITE_VARIANCE) and mean + N_SE * se < FINITE_VARIANCE, (khat, mean, se)


def test_binomial_oracle_on_four_bits_has_a_reliable_khat():
    """Independent-bits oracle, binomial diffusion, T = 10, x⁰ = [1, 0, 1, 0]: ~100 distinct log weights in
    10 000, in atoms spread over a few float32 ulps (the direct fit of these weights is NaN). Spread, the
    streamed k̂ ≤ 0.7 (measured −0.05), and the estimate agrees with the oracle's exact log p(x⁰) within
    N_SE reported standard errors (measured 0.5). One compiled call: compilation dominates its time."""
    schedule = HarmonicSchedule(10)
    oracle = BernoulliOracle(np.asarray(schedule()), np.array([0.05, 0.5, 0.9, 0.3]), 0.3)
    model = BinomialDiffusion((4,), schedule, kernel=oracle, base_rate=0.3)
    x0 = np.array([[1.0, 0.0, 1.0, 0.0]], np.float32)
    key = jax.random.key(0)
    est = log_likelihood(model, x0, key, num_trajectories=M, chunk_size=1000)
    assert est.khat[0] <= KHAT_THRESHOLD, est.khat
    assert_within_se(est.log_p_hat, est.stderr, oracle.log_prob_x0(x0), "IS log p(x0) vs closed form")


def test_conventions_nan_and_minus_inf():
    """NaN below 25 weights; −inf for a tail constant exactly or to float32 rounding (one atom, ~6 by the
    direct fit); log weights that are not all finite in the tail are fitted as before (no spreading)."""
    rng = np.random.default_rng(14)
    assert np.isnan(psis_khat(rng.normal(size=24)))
    lw = np.where(rng.uniform(size=M) < 0.1, 0.0, np.log(rng.uniform(size=M)) - 1.0)  # 10% at the maximum
    assert psis_khat(lw) == -math.inf
    rounded = (lw + rng.integers(-4, 5, size=M) * EPS32).astype(np.float32)
    assert psis_khat(rounded) == -math.inf
    assert direct_khat(rounded)[0] > KHAT_THRESHOLD or np.isnan(direct_khat(rounded)[0])
    w = np.zeros(M)  # only 200 < n_tail positive weights, 50 of them tied: the tail reaches log 0 = −inf
    w[:200] = np.r_[np.ones(50), rng.pareto(2.0, 150) + 1.0]
    with np.errstate(divide="ignore"):
        lw = np.log(w)
    np.testing.assert_array_equal(psis_khat(lw), direct_khat(lw)[0])
