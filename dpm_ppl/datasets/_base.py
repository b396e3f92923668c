"""Datasets, their train/validation/test split and the paper's standardisation (one global scale to
unit variance, Table 1 caption; one scale per column on request).

A `Dataset` is generated from a seed (or read from a file the user gives: `FileData`); nothing is
downloaded. `Dataset.split` returns a `Split`: training rows, validation rows carved out of them,
held-out (test) rows, and the `Standardiser` fitted on the training rows alone. It records the
shift and the scale so that results can be stated in data units as well:
log p_std(z) = log p_raw(x) + log_jacobian(d), with log_jacobian(d) = d·log(scale) for one
global scale and Σ log(scale) for one scale per column.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable

import equinox as eqx
import numpy as np

from .._checks import check_data


__all__ = ["Dataset", "Split", "Standardiser", "constant_columns", "validation_indices"]


# -- standardisation ----------------------------------------------------------------------------

#: A column is *constant* when its sd is at most this times |mean| (or below float32's smallest normal
#: number): it then varies only in float32's last few digits, which carry no information.
CONSTANT_RTOL = 1e-6


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd (ddof = 0) of each entry of the event over the examples, float64, event shape."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    return mean, np.sqrt(np.mean((x - mean) ** 2, axis=0))


def constant_columns(x: np.ndarray) -> np.ndarray:
    """Which entries of the event are constant over the examples ``x`` (boolean, event shape).

    The rule: sd ≤ max(`CONSTANT_RTOL`·|mean|, float32's smallest normal number), sd with ddof = 0 in
    float64. Data are stored as float32, so such a column varies at most in its last few float32
    digits: no information, and dividing by its sd would blow rounding up into signal.
    """
    mean, sd = moments(x)
    return sd <= np.maximum(CONSTANT_RTOL * np.abs(mean), np.finfo(np.float32).tiny)


def _float32(x) -> np.ndarray:
    return np.asarray(x, np.float32)


@dataclasses.dataclass(frozen=True)
class Standardiser:
    """z = (x − shift) / scale: one shift per entry of the event, and a scale that is

    - a float, ONE global scale so that E‖z‖² = d on the training set (the paper's choice, Table 1
      caption: the relative scales of the columns are kept), or
    - an array of the event shape, one scale per column (each column of z has sd 1 on the
      training set; a constant column gets scale 1, see `constant_columns`).

    ``shift`` (and an array ``scale``) are float32; `to_json` / `from_json` round-trip them exactly.
    A log density converts between the units with `log_jacobian`:
    log p_std(z) = log p_raw(x) + log_jacobian(d).
    """

    shift: np.ndarray
    scale: float | np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, per_column: bool = False) -> Standardiser:
        """Shift and scale from the training set (all of it, not one minibatch).

        **Arguments:**

        - `x`: the training examples, shape ``(num_examples, *event_shape)``.
        - `per_column`: one scale per entry of the event instead of one global scale.

        **Returns:**

        The `Standardiser`. Raises `ValueError` when every column is constant.
        """
        constant = constant_columns(x)
        if np.all(constant):
            raise ValueError(
                "The training data are constant (every example is the same): a unit-variance scale cannot be "
                "computed. Check that the file holds the examples you meant to train on."
            )
        shift = _float32(np.asarray(x, np.float64).mean(axis=0))
        centred = np.asarray(x, np.float64) - shift  # about the stored (float32) shift
        if per_column:
            sd = np.sqrt(np.mean(centred**2, axis=0))
            return cls(shift=shift, scale=_float32(np.where(constant, 1.0, sd)))
        return cls(shift=shift, scale=float(np.sqrt(np.mean(centred**2))))

    @classmethod
    def identity(cls, event_shape: tuple[int, ...]) -> Standardiser:
        """No rescaling (binary data: Table 1 caption); results stay in bits per example."""
        return cls(shift=np.zeros(event_shape, np.float32), scale=1.0)

    @property
    def per_column(self) -> bool:
        """Whether there is one scale per column (an array) rather than one global scale."""
        return np.ndim(self.scale) > 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x) - self.shift) / self.scale).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z) * self.scale + self.shift

    def log_jacobian(self, dim: int) -> float:
        """log|dx/dz| = Σ log(scale) over the event (d·log(scale) for one global scale): add it to a log
        density in data units to get it in standardised units (and subtract it to go back)."""
        if not self.per_column:
            return dim * math.log(self.scale)
        scale = np.asarray(self.scale, np.float64)
        assert scale.size == dim, f"the standardiser has {scale.size} scales but the model has d = {dim}"
        return float(np.sum(np.log(scale)))

    def to_json(self) -> dict:
        """A JSON-ready dict: ``shift`` (nested list), ``scale`` (a float, or a nested list of one per
        column) and ``per_column``; `from_json` restores it exactly."""
        scale = _float32(self.scale).tolist() if self.per_column else float(self.scale)
        return {"shift": _float32(self.shift).tolist(), "scale": scale, "per_column": self.per_column}

    @classmethod
    def from_json(cls, d: dict) -> Standardiser:
        """The `Standardiser` that `to_json` wrote (also reads the older ``{"shift", "scale"}`` form)."""
        per_column = d.get("per_column", np.ndim(d["scale"]) > 0)
        scale = _float32(d["scale"]) if per_column else float(d["scale"])
        return cls(shift=_float32(d["shift"]), scale=scale)


@dataclasses.dataclass(frozen=True)
class Split:
    """Standardised training, validation and held-out (test) arrays and the standardiser that made them.

    The standardiser is fitted on ``train`` alone; ``val`` is for choices made while fitting (early
    stopping, model selection), ``test`` for the reported numbers only.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    standardiser: Standardiser


def validation_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``n`` training rows become validation rows: ``(val, train)`` index arrays.

    A permutation seeded with ``np.random.default_rng([seed, 1])``; its first
    ``round(fraction·n)`` entries (at least 1, leaving at least 1 to train on) are the validation rows.
    """
    if n < 2:
        raise ValueError(
            f"Only {n} training example(s): at least 2 are needed to set one aside for validation and train on "
            "the rest. Give more examples."
        )
    num_val = min(n - 1, max(1, round(fraction * n)))
    order = np.random.default_rng([seed, 1]).permutation(n)
    return order[:num_val], order[num_val:]


class Dataset(eqx.Module):
    """A source of examples: ``raw(seed)`` returns raw train and held-out arrays; `split` carves a
    validation set out of the training rows and standardises all three."""

    @property
    @abc.abstractmethod
    def event_shape(self) -> tuple[int, ...]: ...

    @abc.abstractmethod
    def raw(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw (train, test) arrays in data units."""

    @property
    def validation_fraction(self) -> float:
        """The fraction of the training rows that `split` sets aside for validation (0.1)."""
        return 0.1

    @property
    def per_column(self) -> bool:
        """Whether `split` standardises each column on its own scale (False: one global scale, the paper's)."""
        return False

    @property
    def modality(self) -> str | None:
        """How examples are drawn when the data say more than the model's family does: ``"image"`` for images
        (grids), None to draw them as the family's states (`AbstractFamily.modality`)."""
        return None

    def raw_split(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw (train, validation, test) arrays: `carve_validation` of ``raw(seed)``'s training rows
        (the test rows are untouched)."""
        train, test = self.raw(seed)
        return *self.carve_validation(train, seed), test

    def carve_validation(self, train: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) rows out of the raw training rows, by `validation_indices`."""
        val_rows, train_rows = validation_indices(len(train), self.validation_fraction, seed)
        return train[train_rows], train[val_rows]

    def diagnose(self, train: np.ndarray, standardise: bool = True) -> None:
        """Warn (`UserWarning`) about training rows a density model will struggle with; `split` calls it
        on the validated raw training rows. The base class checks nothing (see `FileData`)."""
        del train, standardise

    def split(self, seed: int, check: Callable[..., np.ndarray] = check_data, standardise: bool = True) -> Split:
        """Validated train, validation and held-out arrays, standardised unless ``standardise=False``.

        ``check(x, event_shape, name)`` validates each array (a family's `check_data`). The
        standardiser is fitted on the training rows only (one scale per column where `per_column`).
        """
        train, test = self.raw(seed)
        # checked before the validation rows are carved out, so an error's index is a row of `raw`'s arrays
        train = check(train, self.event_shape, "train data")
        test = check(test, self.event_shape, "held-out data")
        train, val = self.carve_validation(train, seed)
        self.diagnose(train, standardise)
        if standardise:
            standardiser = Standardiser.fit(train, per_column=self.per_column)
        else:
            standardiser = Standardiser.identity(self.event_shape)
        return Split(standardiser(train), standardiser(val), standardiser(test), standardiser)

    def true_log_prob(self, x: np.ndarray) -> np.ndarray | None:
        """The generator's exact log density of raw examples (nats), where it is known."""
        del x
        return None

    def sample_summary(self, samples: np.ndarray) -> dict[str, float]:
        """Statistics of model samples (raw units) worth reporting beside the bound, e.g. validity."""
        del samples
        return {}

    def support(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The generator's finite support as (atoms, probabilities) in raw units, where it has one."""
        return None

    @property
    def bin_width(self) -> float | None:
        """The quantisation bin width in raw units of data dequantised with uniform noise (images), else None."""
        return None
