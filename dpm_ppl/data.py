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
import csv
import dataclasses
import functools
import math
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import numpy as np
from scipy.special import logsumexp


__all__ = [
    "BinaryHeartbeat",
    "Dataset",
    "FileData",
    "Split",
    "Standardiser",
    "SwissRoll",
    "check_binary",
    "check_data",
    "constant_columns",
    "read_csv",
    "validation_indices",
]


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


def check_binary(x: np.ndarray, name: str = "data") -> np.ndarray:
    """Validate binary data at the door: every entry 0 or 1 (binomial diffusion, Table App.1).

    Raises `ValueError` naming the first offending entry's index and value.
    """
    x = np.asarray(x)
    bad = np.argwhere((x != 0) & (x != 1))
    if bad.size:
        idx = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"`{name}` must be binary (0 or 1) for binomial diffusion, but has {x[idx].item()!r} at index {idx} "
            f"({len(bad)} such entries in all). Threshold or binarise the data first."
        )
    return x


# -- standardisation ----------------------------------------------------------------------------

#: A column is *constant* when its sd is at most this times |mean| (or below float32's smallest normal
#: number): it then varies only in float32's last few digits, which carry no information.
CONSTANT_RTOL = 1e-6
#: A column is *near-constant* when its sd is below this times the median sd of the non-constant columns.
NEAR_CONSTANT_RATIO = 1e-3
#: Fewer training rows than this (or than ``ROWS_PER_COLUMN`` per column) is tiny data.
MIN_TRAIN_ROWS = 50
ROWS_PER_COLUMN = 10


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    mean, sd = _moments(x)
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
        """Shift and scale from the training set (all of it, not one minibatch: paper-spec §7).

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


# -- your own data ------------------------------------------------------------------------------

DATA_SUFFIXES = (".npy", ".npz", ".csv")
NPZ_DEFAULT_KEYS = ("x", "data")
MIN_EXAMPLES = 3  # one each to train on, to validate on and to hold out
# warnings point at the caller of dpm_ppl (past equinox's method wrappers)
_PACKAGE_DIR = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.abspath(eqx.__file__)))


#: how a missing value may be written in a CSV of observations (`read_csv(..., missing=True)`)
MISSING = frozenset({"", "nan", "na", "n/a", "null", "none", "?"})


def _number(text: str, missing: bool = False) -> float | None:
    """A CSV cell as a number (with ``missing``, a missing-value spelling as NaN), or None if it is not one."""
    t = text.strip()
    if missing and t.lower() in MISSING:
        return math.nan
    try:
        return float(t)
    except ValueError:
        return None


def read_csv(path: str | os.PathLike, *, missing: bool = False, what: str = "data file"):
    """A numeric CSV (comma-separated) as a float64 array ``(rows, columns)`` and its header's names.

    The first row is a header when none of its cells is a number (so a name is never a number); its
    names are stripped of spaces (a blank one becomes ``x<index>``) and it must have one name per
    column. Blank lines are skipped. Every data row must have the same number of cells, each a number
    (``nan``/``inf`` are numbers here: training data refuse them later with their index). With
    ``missing`` (observations), an empty cell or ``NA``, ``null``, ``?``… is NaN. The names are None
    without a header; ``what`` names the file in errors.
    """
    path = Path(path)
    with open(path, newline="") as f:
        lines = [(i, row) for i, row in enumerate(csv.reader(f), start=1) if any(c.strip() for c in row)]
    header = None
    if lines and all(_number(c) is None for c in lines[0][1]):
        (header_line, header), lines = lines[0], lines[1:]  # a header: names, not numbers
    if not lines:
        raise ValueError(
            f"The {what} {str(path)!r} holds no data rows. Give at least {MIN_EXAMPLES} examples, one per row."
            if not missing
            else f"The {what} {str(path)!r} holds no rows of numbers."
        )
    width = len(lines[0][1])
    fix = (
        "Leave a missing value empty (or write nan)."
        if missing
        else "Fill or drop missing values and encode categories as numbers."
    )
    rows = []
    for line, row in lines:
        if len(row) != width:
            raise ValueError(
                f"The {what} {str(path)!r} is ragged: line {line} has {len(row)} values but line "
                f"{lines[0][0]} has {width}. Give every example the same number of columns."
            )
        values = [_number(c, missing) for c in row]
        for col, (cell, v) in enumerate(zip(row, values), start=1):
            if v is None:
                raise ValueError(
                    f"The {what} {str(path)!r} has a non-numeric value {cell!r} at line {line}, column {col}. {fix}"
                )
        rows.append(values)
    names = None
    if header is not None:
        if len(header) != width:
            raise ValueError(
                f"The {what} {str(path)!r} has a header of {len(header)} names (line {header_line}) but rows of "
                f"{width} values (line {lines[0][0]}). Give one name per column, or drop the header."
            )
        names = tuple(c.strip() or f"x{j}" for j, c in enumerate(header))
    return np.asarray(rows, np.float64), names


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if key is None:
            if len(names) == 1:
                key = names[0]
            else:
                key = next((k for k in NPZ_DEFAULT_KEYS if k in names), None)
                if key is None:
                    raise ValueError(
                        f"The data file {str(path)!r} holds {len(names)} arrays {names}; save one array, or name "
                        f"the data `x` (np.savez(path, x=data)), or pick one with FileData(path, key=NAME)."
                    )
        if key not in names:
            raise ValueError(f"The data file {str(path)!r} has no array {key!r}; it holds {names}.")
        return archive[key]


@functools.lru_cache(maxsize=4)
def _read(path: str, key: str | None, stamp: tuple[int, int]) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """The array in a data file and its CSV header's names (None without one), cached per path, key and
    modification stamp."""
    del stamp  # part of the cache key only: a rewritten file is read again
    p = Path(path)
    names = None
    try:
        if p.suffix == ".csv":
            x, names = read_csv(p)
        elif p.suffix == ".npz":
            x = _read_npz(p, key)
        else:
            x = np.load(p, allow_pickle=False)
    except OSError as err:
        raise OSError(
            f"Cannot read the data file {path!r}: {err.strerror or err}. Check that it is a readable file."
        ) from err
    except ValueError as err:
        if str(err).startswith("The data file"):
            raise
        raise ValueError(
            f"Cannot read the data file {path!r} as {p.suffix}: {err}. Save it with "
            f"{'np.savez' if p.suffix == '.npz' else 'np.save'} from a numeric array."
        ) from err
    if not isinstance(x, np.ndarray) or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(
            f"The data file {path!r} holds an array of dtype {getattr(x, 'dtype', type(x))}; a numeric array is needed."
        )
    if np.iscomplexobj(x):
        raise ValueError(f"The data file {path!r} holds complex numbers; give real-valued data.")
    x = check_data(x, name=f"data file {path!r}")
    x.flags.writeable = False
    return x, names


def _listing(names: tuple[str, ...], limit: int = 30) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _parse_columns(columns) -> tuple[str | int, ...] | None:
    """``columns`` as a tuple of names and integer indices (a string is split at commas; a token that is
    an integer is an index, since a CSV header's names are never numbers)."""
    if columns is None:
        return None
    if isinstance(columns, str):
        tokens = [t.strip() for t in columns.split(",")]
        if any(not t for t in tokens):
            raise ValueError(f"`columns` {columns!r} has an empty entry; give names or indices separated by commas.")
        items = [int(t) if re.fullmatch(r"[+-]?[0-9]+", t) else t for t in tokens]
    else:
        try:
            items = list(columns)
        except TypeError:
            raise ValueError(
                f"`columns` must be a sequence of column names or indices, or a string like 'a,3,-1'; got {columns!r}."
            ) from None
        for c in items:
            if isinstance(c, bool) or not isinstance(c, (str, int, np.integer)):
                raise ValueError(f"`columns` entries must be column names (str) or indices (int), got {c!r}.")
        items = [int(c) if isinstance(c, np.integer) else c for c in items]
    if not items:
        raise ValueError("`columns` is empty: name at least one column to keep (or leave it out to keep them all).")
    return tuple(items)


def _resolve_columns(columns: tuple[str | int, ...], names: tuple[str, ...], path: str) -> list[int]:
    """The file column indices that ``columns`` names (names, indices, negative indices)."""
    d = len(names)
    out = []
    for c in columns:
        if isinstance(c, str):
            hits = [j for j, n in enumerate(names) if n == c]
            if not hits:
                raise ValueError(
                    f"The data file {path!r} has no column {c!r}. Its columns are: {_listing(names)} "
                    f"(or give 0-based indices 0…{d - 1}, negative from the end)."
                )
            if len(hits) > 1:
                raise ValueError(
                    f"The data file {path!r} has {len(hits)} columns named {c!r} (indices {hits}); select by index."
                )
            j = hits[0]
        else:
            if not -d <= c < d:
                raise ValueError(
                    f"Column index {c} is out of range for the data file {path!r}, which has {d} columns "
                    f"(0…{d - 1}, or −{d}…−1 from the end): {_listing(names)}."
                )
            j = c % d
        if j in out:
            raise ValueError(f"`columns` names the column {names[j]!r} (index {j}) of {path!r} twice; keep it once.")
        out.append(j)
    return out


@functools.lru_cache(maxsize=8)
def _select(
    path: str, key: str | None, stamp: tuple[int, int], columns: tuple | None, drop_constant: bool
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The kept columns of a data file and their names (cached like `_read`)."""
    x, header = _read(path, key, stamp)
    flat = int(np.prod(x.shape[1:]))
    names = header if header is not None else tuple(f"x{j}" for j in range(flat))
    if x.ndim != 2 and (columns is not None or drop_constant):
        option = "`columns`" if columns is not None else "`drop_constant`"
        raise ValueError(
            f"{option} selects columns of a table, but the examples in {path!r} have shape {x.shape[1:]}. "
            "Flatten them first (np.save(path, x.reshape(len(x), -1))), or leave the option out."
        )
    keep = list(range(flat)) if columns is None else _resolve_columns(columns, names, path)
    if drop_constant:
        constant = constant_columns(x[:, keep])
        if np.all(constant):
            raise ValueError(
                f"Every kept column of the data file {path!r} is constant, so drop_constant=True leaves nothing to "
                f"model: {_listing(tuple(names[j] for j in keep))}."
            )
        keep = [j for j, c in zip(keep, constant) if not c]
    if keep == list(range(flat)):
        return x, names
    out = x[:, keep]
    out.flags.writeable = False
    return out, tuple(names[j] for j in keep)


class FileData(Dataset):
    """Your own data from a file: ``.npy``, ``.npz`` or ``.csv``, one example per row (first axis).

    - ``.npy``: one array of shape ``(num_examples, *event_shape)``.
    - ``.npz``: the only array in it, or the one named ``key`` (default: ``x`` or ``data``).
    - ``.csv``: numbers separated by commas, one example per line; a first line of names is a
      header (its names are `column_names`).

    The examples are shuffled with the run's seed and split into a held-out (test) set holding
    ``heldout_fraction`` of them (at least one) and the rest; `split` then sets
    ``validation_fraction`` of the rest aside for validation (at least one) and trains on the others.
    At least 3 examples are needed. The file is validated when read: shape, emptiness, and
    finiteness, with the index of the first bad entry (a row of the file); `split` then applies the
    model family's check (e.g. binary data for binomial diffusion).

    `split` warns (`UserWarning`) about the training rows (see `diagnose`): a constant column
    (`constant_columns`), a column whose sd is below `NEAR_CONSTANT_RATIO` (10⁻³) times the median sd
    of the non-constant columns (with one global scale only: one scale per column makes it
    unit-variance; and not for unscaled, binary, data), and tiny
    data (fewer than `MIN_TRAIN_ROWS` = 50 training rows, or fewer than `ROWS_PER_COLUMN` = 10 per column).

    **Arguments:**

    - `path`: the file.
    - `heldout_fraction`: the fraction held out for evaluation, in (0, 1); default 0.1.
    - `key`: the array's name inside an ``.npz`` file.
    - `validation_fraction`: the fraction of the remaining rows set aside for validation, in (0, 1);
      default 0.1.
    - `per_column`: standardise each column to sd 1 (a constant one keeps scale 1) instead of the
      paper's one global scale.
    - `columns`: the columns to keep, in this order (a table's examples only): names from the CSV
      header (or ``x0``, ``x1``, … without one), 0-based indices (negative from the end), or a
      string of them separated by commas (``"alcohol,3,-1"``). Default: all.
    - `drop_constant`: leave out the columns that are constant over the whole file (after
      `columns`; the whole file, so that the event shape does not depend on the seed).
    """

    path: str = eqx.field(static=True)
    heldout_fraction: float = eqx.field(static=True, default=0.1)
    key: str | None = eqx.field(static=True, default=None)
    validation_fraction: float = eqx.field(static=True, default=0.1)
    per_column: bool = eqx.field(static=True, default=False)
    columns: tuple[str | int, ...] | None = eqx.field(static=True, default=None)
    drop_constant: bool = eqx.field(static=True, default=False)

    def __init__(
        self,
        path: str | os.PathLike,
        heldout_fraction: float = 0.1,
        key: str | None = None,
        *,
        validation_fraction: float = 0.1,
        per_column: bool = False,
        columns=None,
        drop_constant: bool = False,
    ):
        self.path = str(path)
        self.heldout_fraction = heldout_fraction
        self.key = key
        self.validation_fraction = validation_fraction
        self.per_column = per_column
        self.columns = _parse_columns(columns)
        self.drop_constant = drop_constant

    def __check_init__(self):
        suffix = Path(self.path).suffix
        if suffix not in DATA_SUFFIXES:
            raise ValueError(
                f"The data file must be a {', '.join(DATA_SUFFIXES[:-1])} or {DATA_SUFFIXES[-1]} file, got "
                f"{self.path!r}. Save a numeric array with np.save, or write a CSV with one example per row."
            )
        for name in ("heldout_fraction", "validation_fraction"):
            f = getattr(self, name)
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f < 1.0:
                raise ValueError(f"`{name}` must lie strictly inside (0, 1), got {f!r}.")
        for name in ("per_column", "drop_constant"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")

    def _table(self) -> tuple[np.ndarray, tuple[str, ...]]:
        p = Path(self.path)
        if not p.is_file():
            raise FileNotFoundError(
                f"No data file at {self.path!r}. Give the path of a .npy, .npz or .csv file with one example per row."
            )
        st = p.stat()
        return _select(str(p.resolve()), self.key, (st.st_mtime_ns, st.st_size), self.columns, self.drop_constant)

    def array(self) -> np.ndarray:
        """Every example in the file (the kept columns), float32, validated (read-only; cached until the
        file changes)."""
        return self._table()[0]

    @property
    def column_names(self) -> list[str]:
        """The kept columns' names: the CSV header's, else ``x<file column index>`` (one per entry of the
        flattened event for examples that are not rows of a table)."""
        return list(self._table()[1])

    @property
    def name(self) -> str:
        """The file's name without its suffix (run folders are named after it)."""
        return Path(self.path).stem

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.array().shape[1:])

    @property
    def num_examples(self) -> int:
        return self.array().shape[0]

    def raw(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw (rest, test) rows: ``round(heldout_fraction·n)`` test rows (at least 1, leaving at least 2
        for `split` to train and validate on) after a permutation seeded with ``seed``."""
        x = self.array()
        n = len(x)
        if n < MIN_EXAMPLES:
            raise ValueError(
                f"The data file {self.path!r} holds {n} example{'s' if n != 1 else ''}; at least {MIN_EXAMPLES} "
                "are needed (one each to train on, to validate on and to hold out)."
            )
        num_test = min(n - 2, max(1, round(self.heldout_fraction * n)))
        order = np.random.default_rng(seed).permutation(n)
        return x[order[num_test:]], x[order[:num_test]]

    def diagnose(self, train: np.ndarray, standardise: bool = True) -> None:
        """Warn about constant and near-constant columns (only where the data are standardised: binary
        data are not) and about tiny data, naming the columns and the fix."""
        n = len(train)
        flat = np.asarray(train, np.float64).reshape(n, -1)
        d = flat.shape[1]
        names = self.column_names
        where = f"of the data file {self.path!r}"
        if standardise:
            mean, sd = _moments(flat)
            constant = constant_columns(flat)
            if constant.any():
                cols = np.flatnonzero(constant)
                listed = ", ".join(f"{names[j]!r} (= {mean[j]:.6g})" for j in cols[:10])
                more = f", … ({len(cols)} in all)" if len(cols) > 10 else ""
                warnings.warn(
                    f"Column{'s' if len(cols) > 1 else ''} {listed}{more} {where} "
                    f"{'are' if len(cols) > 1 else 'is'} constant in the training rows: no information, and a "
                    "density on it is degenerate (a spike that swamps the bits). Leave it out with "
                    "FileData(columns=...) / --columns, or drop constant columns with drop_constant=True.",
                    UserWarning,
                    skip_file_prefixes=_PACKAGE_DIR,
                )
            rest = ~constant
            if not self.per_column and rest.sum() >= 2:
                median = float(np.median(sd[rest]))
                small = np.flatnonzero(rest & (sd < NEAR_CONSTANT_RATIO * median))
                if small.size:
                    listed = ", ".join(f"{names[j]!r} (sd {sd[j]:.3g})" for j in small[:10])
                    more = f", … ({len(small)} in all)" if len(small) > 10 else ""
                    warnings.warn(
                        f"Column{'s' if small.size > 1 else ''} {listed}{more} {where} "
                        f"{'vary' if small.size > 1 else 'varies'} far less than the others (median sd "
                        f"{median:.3g}): under one global scale {'they are' if small.size > 1 else 'it is'} "
                        "nearly constant, and the density spikes along it. Standardise each column on its own "
                        "with per_column=True, or leave it out with FileData(columns=...) / --columns.",
                        UserWarning,
                        skip_file_prefixes=_PACKAGE_DIR,
                    )
        need = max(MIN_TRAIN_ROWS, ROWS_PER_COLUMN * d)
        if n < need:
            warnings.warn(
                f"Only {n} training row{'s' if n != 1 else ''} for {d} column{'s' if d != 1 else ''} {where} "
                f"(fewer than {need}: "
                f"{MIN_TRAIN_ROWS} at least and {ROWS_PER_COLUMN} per column). The held-out bits will be noisy "
                "and the model may overfit: compare it with the Gaussian and mixture baselines on the same "
                "split, and get more rows or keep fewer columns (columns=...).",
                UserWarning,
                skip_file_prefixes=_PACKAGE_DIR,
            )

    def split(self, seed: int, check: Callable[..., np.ndarray] = check_data, standardise: bool = True) -> Split:
        # the family's check on the whole file first, so an error's index is a row of the file
        check(self.array(), self.event_shape, f"data file {self.path!r}")
        return super().split(seed, check, standardise)
