"""The baseline density models (`dpm_ppl.infer._baselines`): a full-covariance Gaussian and a cross-validated
Gaussian mixture, checked against exact densities; the paired difference against a hand computation."""

import math

import numpy as np
import pytest
from helpers import N_SE
from scipy.special import logsumexp

from dpm_ppl.infer._baselines import (
    Baseline,
    _max_components,
    baselines,
    gaussian_log_prob,
    gmm_log_prob,
    paired_difference,
)


LOG_2PI = math.log(2 * math.pi)


def _normal_log_prob(x, mean, cov):
    x = np.asarray(x, np.float64) - mean
    sol = np.linalg.solve(cov, x.T).T
    return -0.5 * (len(mean) * LOG_2PI + np.linalg.slogdet(cov)[1] + np.sum(x * sol, -1))


def test_paired_difference_by_hand():
    """a − b = (1, 2, 2, 3): mean 2, sd (ddof 1) = √(2/3), standard error √(2/3)/2; one example: no error."""
    mean, se = paired_difference([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0])
    assert mean == pytest.approx(2.0, abs=1e-15) and se == pytest.approx(math.sqrt(2 / 3) / 2, rel=1e-14)
    mean, se = paired_difference(np.array([5.0]), np.array([1.5]))
    assert mean == 3.5 and math.isnan(se)
    with pytest.raises(ValueError, match=r"one shape"):
        paired_difference([1.0, 2.0], [1.0])


def test_gaussian_matches_the_entropy():
    """n = 20,000 training rows of N(m, S), d = 3: the mean held-out log density is −H = −½(d(1 + log 2π) +
    log det S) within 4 standard errors (sd/√m of the per-row log density), and the fitted density is the
    true one on the same rows within 4 paired standard errors plus the fitting excess (≈ p/2n, p = 9
    parameters; allowed p/n)."""
    rng = np.random.default_rng(0)
    d, n, m = 3, 20_000, 20_000
    a = rng.normal(size=(d, d))
    cov = a @ a.T + 0.5 * np.eye(d)
    mean = np.array([1.0, -2.0, 3.0])
    train = rng.multivariate_normal(mean, cov, size=n)
    test = rng.multivariate_normal(mean, cov, size=m)
    lp = gaussian_log_prob(train, test)
    assert lp.shape == (m,) and lp.dtype == np.float64
    neg_entropy = -0.5 * (d * (1 + LOG_2PI) + np.linalg.slogdet(cov)[1])
    assert abs(lp.mean() - neg_entropy) <= N_SE * lp.std(ddof=1) / math.sqrt(m)
    gap, se = paired_difference(lp, _normal_log_prob(test, mean, cov))
    p = d + d * (d + 1) / 2
    assert -N_SE * se - p / n <= gap <= N_SE * se


def test_gaussian_with_singular_covariance_is_finite():
    """A constant column and fewer rows than columns: the ridge keeps the density finite; the event is flattened."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 2, 2))
    x[:, 1, 1] = 3.0
    assert np.all(np.isfinite(gaussian_log_prob(x, x[:5])))
    assert np.all(np.isfinite(gaussian_log_prob(rng.normal(size=(2, 5)), rng.normal(size=(4, 5)))))
    with pytest.raises(ValueError, match=r"4 entries per example but `test` has 3"):
        gaussian_log_prob(x, np.zeros((3, 3)))


MEANS = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])
WEIGHTS = np.array([0.5, 0.3, 0.2])


def _mixture(rng, n):
    c = rng.choice(3, size=n, p=WEIGHTS)
    return MEANS[c] + rng.standard_normal((n, 3))


def _mixture_log_prob(x):
    per = np.stack([_normal_log_prob(x, mu, np.eye(3)) for mu in MEANS])
    return logsumexp(per + np.log(WEIGHTS)[:, None], axis=0)


def test_gmm_picks_three_components():
    """A well-separated 3-component mixture (unit covariances 8 sd apart), 4,000 training rows: the CV picks
    k = 3, and the held-out log density is the true mixture's on the same 4,000 test rows within 4 paired
    standard errors plus the fitting excess (p = 29 parameters: allowed p/n); `baselines` returns both."""
    rng = np.random.default_rng(2)
    n = 4_000
    train, test = _mixture(rng, n), _mixture(rng, 4_000)
    lp, k = gmm_log_prob(train, test, seed=0)
    assert k == 3 and lp.shape == (4_000,)
    gap, se = paired_difference(lp, _mixture_log_prob(test))
    p = 3 * (3 + 6) + 2
    assert -N_SE * se - p / n <= gap <= N_SE * se
    # unpaired, the spec's form: within 4 standard errors of the mean log density
    assert abs(lp.mean() - _mixture_log_prob(test).mean()) <= N_SE * lp.std(ddof=1) / math.sqrt(len(lp))


def test_gmm_is_seeded_and_never_sees_the_test_rows():
    """Same seed, same answer; a test row's log density does not depend on the other test rows (the test
    rows take no part in choosing k or fitting); k is capped so each fold trains on more than k(d + 1) rows."""
    rng = np.random.default_rng(3)
    train, test = _mixture(rng, 300), _mixture(rng, 50)
    lp, k = gmm_log_prob(train, test, seed=1, max_components=4)
    again, k_again = gmm_log_prob(train, test, seed=1, max_components=4)
    np.testing.assert_array_equal(lp, again)
    part, k_part = gmm_log_prob(train, test[:7], seed=1, max_components=4)
    np.testing.assert_array_equal(part, lp[:7])
    assert k == k_again == k_part
    # 12 rows, 5 folds: each fold trains on 9 > k·4 rows, so k ≤ 2
    assert _max_components(12, 3, 5, 10) == 2 and _max_components(5, 3, 5, 10) == 1
    assert gmm_log_prob(train[:12], test, seed=0)[1] <= 2
    with pytest.raises(ValueError, match=r"`folds` must be an integer ≥ 2"):
        gmm_log_prob(train, test, seed=0, folds=1)


def test_baselines_lists_both():
    rng = np.random.default_rng(4)
    train, test = _mixture(rng, 300), _mixture(rng, 20)
    out = baselines(train, test, seed=0)
    assert [b.name for b in out] == ["gaussian", "gmm"] and all(isinstance(b, Baseline) for b in out)
    np.testing.assert_array_equal(out[0].log_prob, gaussian_log_prob(train, test))
    lp, k = gmm_log_prob(train, test, seed=0)
    np.testing.assert_array_equal(out[1].log_prob, lp)
    assert out[1].detail["k"] == k and len(out[1].detail["cv_log_prob"]) >= k
