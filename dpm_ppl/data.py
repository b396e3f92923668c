"""Datasets and the paper's standardisation (one global scale to unit variance, Table 1 caption).

A `Dataset` is generated from a seed (or read from a path the user gives); nothing is downloaded.
`Standardiser` records the shift and the single scale so that results can be stated in data
units as well: log p_std(z) = log p_raw(x) + d·log(scale).
"""

from __future__ import annotations

import abc
import dataclasses
import math

import equinox as eqx
import numpy as np
from scipy.special import logsumexp


__all__ = ["Dataset", "Split", "Standardiser", "SwissRoll", "check_data"]


def check_data(x: np.ndarray, event_shape: tuple[int, ...] | None = None, name: str = "data") -> np.ndarray:
    """Validate data at the door: a non-empty float array, finite, of the model's event shape."""
    x = np.asarray(x)
    if x.dtype == object or x.ndim < 2:
        raise ValueError(
            f"`{name}` must be an array of shape (num_examples, *event_shape), got shape {x.shape}. "
            "Stack the examples along the first axis."
        )
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (shape {x.shape}): give at least one example.")
    if event_shape is not None and tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"`{name}` has examples of shape {tuple(x.shape[1:])} but the model expects {tuple(event_shape)}."
        )
    x = x.astype(np.float32)
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        idx = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"`{name}` contains a non-finite value {float(x[idx])!r} at index {idx} ({len(bad)} in all). "
            "Remove or impute those entries before training."
        )
    return x


@dataclasses.dataclass(frozen=True)
class Standardiser:
    """z = (x − shift) / scale with ONE scalar scale so that E‖z‖² = d (paper Table 1 caption)."""

    shift: np.ndarray
    scale: float

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardiser:
        """Shift and scale from the training set (all of it, not one minibatch: paper-spec §7)."""
        shift = x.mean(axis=0)
        scale = float(np.sqrt(np.mean((x - shift) ** 2)))
        if not scale > 0:
            raise ValueError("The training data are constant: a unit-variance scale cannot be computed.")
        return cls(shift=shift, scale=scale)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.shift) / self.scale).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z) * self.scale + self.shift

    def log_jacobian(self, dim: int) -> float:
        """d·log(scale): add to a log density in data units to get it in standardised units."""
        return dim * math.log(self.scale)


@dataclasses.dataclass(frozen=True)
class Split:
    """Standardised train and held-out arrays and the standardiser that made them."""

    train: np.ndarray
    test: np.ndarray
    standardiser: Standardiser


class Dataset(eqx.Module):
    """A source of examples: ``load(seed)`` returns raw train and held-out arrays."""

    @property
    @abc.abstractmethod
    def event_shape(self) -> tuple[int, ...]: ...

    @abc.abstractmethod
    def raw(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw (train, test) arrays in data units."""

    def split(self, seed: int) -> Split:
        """Validated, standardised train and held-out arrays."""
        train, test = self.raw(seed)
        train = check_data(train, self.event_shape, "train data")
        test = check_data(test, self.event_shape, "held-out data")
        standardiser = Standardiser.fit(train)
        return Split(standardiser(train), standardiser(test), standardiser)

    def true_log_prob(self, x: np.ndarray) -> np.ndarray | None:
        """The generator's exact log density of raw examples (nats), where it is known."""
        del x
        return None


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
