"""Baseline density models to compare a diffusion model's bits against, on the same split and in the same units.

Both are fitted on the training rows alone (scikit-learn, float64) and score the held-out rows:

- `gaussian_log_prob`: one full-covariance Gaussian, by maximum likelihood;
- `gmm_log_prob`: a full-covariance Gaussian mixture whose number of components is chosen by
  cross-validation on the training rows.

Give them the arrays of a `dpm_ppl.datasets.Split` (standardised units), so that their log densities are
in the units of the model's K; convert both to data units the same way, by subtracting
``split.standardiser.log_jacobian(d)``. `paired_difference` then compares the model with a baseline
example by example (the same test rows: a paired comparison, far tighter than two separate errors).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.linalg import solve_triangular

from .._checks import positive_int
from .._stats import mean_stderr


__all__ = ["Baseline", "baselines", "gaussian_log_prob", "gmm_log_prob", "paired_difference"]

#: The Gaussian's ridge, as a fraction of the mean variance of the training columns.
RIDGE = 1e-6

# the most training rows the GMM's cross-validation uses (`gmm_log_prob`)
CV_ROWS = 2_000


def _flat(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"`{name}` must be a non-empty array of shape (num_examples, *event_shape), got {x.shape}.")
    return x.reshape(len(x), -1)


def _pair(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    train, test = _flat(train, "train"), _flat(test, "test")
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"`train` has {train.shape[1]} entries per example but `test` has {test.shape[1]}: give the same split."
        )
    return train, test


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The mean of ``a − b`` over examples and its standard error.

    **Arguments:**

    - `a`, `b`: per-example values on the SAME examples (e.g. a model's and a baseline's log density
      of each test row), the same shape.

    **Returns:**

    ``(mean, stderr)``: the mean difference and sd/√n of the differences (ddof = 1); the error is
    NaN for a single example (written as null in JSON records).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"`a` and `b` must be non-empty and of one shape (the same examples), got {a.shape}, {b.shape}."
        )
    return mean_stderr(a - b)


def gaussian_log_prob(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-example log density (nats) of the test rows under a full-covariance Gaussian fitted to the
    training rows by maximum likelihood.

    The event is flattened; the covariance is the ML one (ddof = 0) plus a ridge of `RIDGE` (10⁻⁶)
    times the mean variance of the columns (10⁻⁶ when that is 0) on its diagonal, so that a singular
    covariance (a constant column, fewer rows than columns) still gives a finite density; the ridge
    moves the log density of well-conditioned data by ~10⁻⁶·d nats.

    **Arguments:**

    - `train`: training rows, shape ``(n, *event_shape)``.
    - `test`: the rows to score, shape ``(m, *event_shape)``.

    **Returns:**

    Shape ``(m,)``, float64.
    """
    train, test = _pair(train, test)
    d = train.shape[1]
    mean = train.mean(axis=0)
    centred = train - mean
    cov = centred.T @ centred / len(train)
    level = float(np.mean(np.diag(cov)))
    cov[np.diag_indices(d)] += RIDGE * (level if level > 0 else 1.0)
    chol = np.linalg.cholesky(cov)
    white = solve_triangular(chol, (test - mean).T, lower=True)
    log_det = 2.0 * np.sum(np.log(np.diag(chol)))
    return -0.5 * (d * math.log(2 * math.pi) + log_det + np.sum(white**2, axis=0))


def _max_components(n: int, d: int, folds: int, max_components: int) -> int:
    """The largest k with more rows than k·(d + 1) in each fold's training part."""
    fold_train = n - math.ceil(n / folds)
    return max(1, min(max_components, (fold_train - 1) // (d + 1)))


def gmm_log_prob(
    train: np.ndarray,
    test: np.ndarray,
    *,
    seed: int,
    max_components: int = 10,
    folds: int = 5,
    cv_rows: int = CV_ROWS,
) -> tuple[np.ndarray, int]:
    """Per-example log density (nats) of the test rows under a full-covariance Gaussian mixture, its
    number of components chosen by cross-validation on the training rows (never the test rows).

    For k = 1, 2, …: ``sklearn.mixture.GaussianMixture(k, covariance_type="full", random_state=seed)``
    (sklearn's default ``reg_covar`` 10⁻⁶) is fitted on each of ``folds`` folds' training part
    (`sklearn.model_selection.KFold`, shuffled with ``seed``) and scores the fold's held-out rows. k
    is capped so that each fold's training part has more than k·(d + 1) rows (and at
    ``max_components``). The chosen k is the smallest whose held-out log density per row is within
    one standard error (paired over the rows) of the best k's (the one-standard-error rule: extra
    components that split a cluster gain nothing real). The mixture is then refitted on all training
    rows with that k. Seeded and deterministic. With more than ``cv_rows`` training rows the
    cross-validation runs on a seeded random subset of ``cv_rows`` of them (the choice of k is then a
    few seconds, not a minute, at 20,000 rows); the final mixture is fitted on all of them.

    **Arguments:**

    - `train`: training rows, shape ``(n, *event_shape)`` (the event is flattened).
    - `test`: the rows to score, shape ``(m, *event_shape)``.
    - `seed`: seeds the folds and the mixtures' initialisation.
    - `max_components`: the largest k tried.
    - `folds`: the number of folds (at most n).
    - `cv_rows`: the most training rows the cross-validation uses.

    **Returns:**

    ``(log_prob, k)``: shape ``(m,)`` float64, and the chosen number of components.
    """
    log_prob, k, _ = _gmm(train, test, seed=seed, max_components=max_components, folds=folds, cv_rows=cv_rows)
    return log_prob, k


def _gmm(train, test, *, seed, max_components, folds, cv_rows=CV_ROWS):
    from sklearn.mixture import GaussianMixture
    from sklearn.model_selection import KFold

    train, test = _pair(train, test)
    positive_int("max_components", max_components)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"`folds` must be an integer ≥ 2, got {folds!r}.")
    n, d = train.shape

    def mixture(k):
        return GaussianMixture(n_components=k, covariance_type="full", random_state=seed)

    cv = []  # per k: the held-out log density of every CV row, from the fold that left it out
    rows = train if n <= cv_rows else train[np.random.default_rng(seed).choice(n, cv_rows, replace=False)]
    m = len(rows)
    folds = min(folds, m)
    if m >= 2:
        k_max = _max_components(m, d, folds, max_components)
        splits = list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(rows))
        for k in range(1, k_max + 1):
            held = np.empty(m)
            for fit_rows, score_rows in splits:
                held[score_rows] = mixture(k).fit(rows[fit_rows]).score_samples(rows[score_rows])
            cv.append(held)
        best = int(np.argmax([h.mean() for h in cv]))
        k = best + 1
        for j in range(best):  # the smallest k within one paired standard error of the best
            gap, se = paired_difference(cv[best], cv[j])
            if math.isfinite(se) and gap <= se:
                k = j + 1
                break
    else:
        k = 1
    log_prob = mixture(k).fit(train).score_samples(test)
    return log_prob, k, [float(h.mean()) for h in cv]


class Baseline(NamedTuple):
    """A baseline's per-example log density of the test rows (nats, the units of its inputs) and details."""

    name: str
    log_prob: np.ndarray
    detail: dict


def baselines(train: np.ndarray, test: np.ndarray, *, seed: int) -> list[Baseline]:
    """Both baselines on one split.

    **Arguments:**

    - `train`, `test`: the split's training and test rows (standardised units, as the model sees them).
    - `seed`: for the mixture's folds and initialisation.

    **Returns:**

    ``[Baseline("gaussian", …, {}), Baseline("gmm", …, {"k": k, "cv_log_prob": [mean held-out log
    density per training row for k = 1, 2, …]})]``.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # hundreds of tiny factorisations: threads cost more than they give
        gmm, k, cv = _gmm(train, test, seed=seed, max_components=10, folds=5)
    return [
        Baseline("gaussian", gaussian_log_prob(train, test), {}),
        Baseline("gmm", gmm, {"k": k, "cv_log_prob": cv}),
    ]
