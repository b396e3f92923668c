"""Synthetic data sets with known densities: the Swiss roll and the binary heartbeat (paper §3.1)."""

from __future__ import annotations

import math

import equinox as eqx
import numpy as np
from scipy.special import logsumexp

from ._base import Dataset


__all__ = ["BinaryHeartbeat", "SwissRoll"]


class SwissRoll(Dataset):
    """The 2-D Swiss roll (paper §3.1.1) with a documented generator whose density is known.

    s ~ U(1.5π, 4.5π), x = (s·cos s, s·sin s) + σ·ε, ε ~ N(0, I), σ = ``noise`` (0.02), in raw
    units; then one global scale to unit variance. The density is
    p(x) = ∫ U(s) N(x; c(s), σ²I) ds, computed by quadrature on a grid fine enough to resolve
    the Gaussian across the roll (`true_log_prob`).
    """

    num_train: int = eqx.field(static=True, default=20_000)
    num_test: int = eqx.field(static=True, default=5_000)
    noise: float = eqx.field(static=True, default=0.02)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (2,)

    def _sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        s = rng.uniform(1.5 * np.pi, 4.5 * np.pi, n)
        return np.stack([s * np.cos(s), s * np.sin(s)], axis=1) + self.noise * rng.standard_normal((n, 2))

    def raw(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        return self._sample(rng, self.num_train), self._sample(rng, self.num_test)

    def true_log_prob(self, x: np.ndarray, window: float = 0.3, points: int = 1501) -> np.ndarray:
        """log p(x) in raw units by quadrature over s (float64).

        Only the arcs near x contribute (neighbouring turns are ~2π apart, ≫ σ): for each
        candidate s₀ = atan2(x₂, x₁) + 2πk, the trapezoid rule over [s₀ − w, s₀ + w] clipped to
        the roll's ends, with spacing ≤ 4·10⁻⁴, several points per σ/|c′(s)|.
        """
        lo, hi = 1.5 * np.pi, 4.5 * np.pi
        x = np.asarray(x, np.float64)
        theta = np.arctan2(x[:, 1], x[:, 0])
        var = self.noise**2
        u = np.linspace(0.0, 1.0, points)
        log_trap = np.log(np.r_[0.5, np.ones(points - 2), 0.5])
        total = np.full(len(x), -np.inf)
        for k in range(4):
            centre = theta + 2 * np.pi * k
            a = np.clip(centre - window, lo, hi)[:, None]
            b = np.clip(centre + window, lo, hi)[:, None]
            s = a + (b - a) * u
            sq = (x[:, :1] - s * np.cos(s)) ** 2 + (x[:, 1:] - s * np.sin(s)) ** 2
            log_k = -sq / (2 * var) - np.log(2 * np.pi * var) + log_trap
            with np.errstate(divide="ignore"):
                log_ds = np.log((b[:, 0] - a[:, 0]) / (points - 1) / (hi - lo))
            total = np.logaddexp(total, logsumexp(log_k, axis=1) + log_ds)
        return total


class BinaryHeartbeat(Dataset):
    """The binary heartbeat (paper §3.1.2, App. D.1.2): length-``length`` binary sequences with a 1
    every ``period``-th bin and the first pulse uniform over the first ``period`` bins.

    There are ``period`` distinct sequences, equally likely, so log p(x) = −log ``period`` for a valid
    sequence (−log₂ 5 = −2.322 bits for the paper's 20 bins and period 5) and −∞ otherwise. Each
    bin is 1 with probability 1/``period``, the base rate p = 0.2 of the paper's diffusion.
    """

    num_train: int = eqx.field(static=True, default=10_000)
    num_test: int = eqx.field(static=True, default=1_000)
    length: int = eqx.field(static=True, default=20)
    period: int = eqx.field(static=True, default=5)

    def __check_init__(self):
        if not 1 <= self.period <= self.length:
            raise ValueError(f"`period` must lie in 1…length = {self.length}, got {self.period!r}.")

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.length,)

    def sequences(self) -> np.ndarray:
        """The ``period`` distinct sequences, shape ``(period, length)``; row k has its first pulse at bin k."""
        bins = np.arange(self.length)
        return (bins[None, :] % self.period == np.arange(self.period)[:, None]).astype(np.float32)

    def raw(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        seqs = self.sequences()
        return seqs[rng.integers(0, self.period, self.num_train)], seqs[rng.integers(0, self.period, self.num_test)]

    def is_valid(self, x: np.ndarray) -> np.ndarray:
        """Whether each example is one of the true sequences, shape ``(num_examples,)``."""
        x = np.asarray(x).reshape(len(x), 1, self.length)
        return np.any(np.all(x == self.sequences()[None], axis=-1), axis=-1)

    def true_log_prob(self, x: np.ndarray) -> np.ndarray:
        """log(1/period) for a valid sequence, −∞ otherwise (nats)."""
        return np.where(self.is_valid(x), -math.log(self.period), -np.inf)

    def sample_summary(self, samples: np.ndarray) -> dict[str, float]:
        """The fraction of samples that are one of the ``period`` true sequences."""
        return {"valid_sample_fraction": float(np.mean(self.is_valid(samples)))}

    def support(self) -> tuple[np.ndarray, np.ndarray]:
        """The ``period`` sequences, equally likely."""
        return self.sequences(), np.full(self.period, 1.0 / self.period)
