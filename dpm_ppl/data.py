"""Datasets and the paper's standardisation (one global scale to unit variance, Table 1 caption).

A `Dataset` is generated from a seed (or read from a file the user gives: `FileData`); nothing is
downloaded.
`Standardiser` records the shift and the single scale so that results can be stated in data
units as well: log p_std(z) = log p_raw(x) + d·log(scale).
"""

from __future__ import annotations

import abc
import csv
import dataclasses
import functools
import math
import os
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
            raise ValueError(
                "The training data are constant (every example is the same): a unit-variance scale cannot be "
                "computed. Check that the file holds the examples you meant to train on."
            )
        return cls(shift=shift, scale=scale)

    @classmethod
    def identity(cls, event_shape: tuple[int, ...]) -> Standardiser:
        """No rescaling (binary data: Table 1 caption); results stay in bits per example."""
        return cls(shift=np.zeros(event_shape, np.float32), scale=1.0)

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

    def split(self, seed: int, check: Callable[..., np.ndarray] = check_data, standardise: bool = True) -> Split:
        """Validated train and held-out arrays, standardised unless ``standardise=False``.

        ``check(x, event_shape, name)`` validates each array (a family's `check_data`).
        """
        train, test = self.raw(seed)
        train = check(train, self.event_shape, "train data")
        test = check(test, self.event_shape, "held-out data")
        standardiser = Standardiser.fit(train) if standardise else Standardiser.identity(self.event_shape)
        return Split(standardiser(train), standardiser(test), standardiser)

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


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> np.ndarray:
    """A numeric CSV (comma-separated) as a float64 array ``(rows, columns)``.

    The first row is a header, and skipped, when none of its cells is a number; blank lines are
    skipped. Every data row must have the same number of cells, each a number (``nan``/``inf`` are
    numbers here and are refused later with their index).
    """
    with open(path, newline="") as f:
        lines = [(i, row) for i, row in enumerate(csv.reader(f), start=1) if any(c.strip() for c in row)]
    if lines and not any(_is_number(c) for c in lines[0][1]):
        lines = lines[1:]  # a header: names, not numbers
    if not lines:
        raise ValueError(f"The data file {str(path)!r} holds no data rows. Give at least two examples, one per row.")
    width = len(lines[0][1])
    rows = []
    for line, row in lines:
        if len(row) != width:
            raise ValueError(
                f"The data file {str(path)!r} is ragged: line {line} has {len(row)} values but line "
                f"{lines[0][0]} has {width}. Give every example the same number of columns."
            )
        for col, cell in enumerate(row, start=1):
            if not _is_number(cell):
                raise ValueError(
                    f"The data file {str(path)!r} has a non-numeric value {cell!r} at line {line}, column {col}. "
                    "Fill or drop missing values and encode categories as numbers."
                )
        rows.append([float(c) for c in row])
    return np.asarray(rows, np.float64)


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
def _read(path: str, key: str | None, stamp: tuple[int, int]) -> np.ndarray:
    """The array in a data file (cached per path, key and modification stamp)."""
    del stamp  # part of the cache key only: a rewritten file is read again
    p = Path(path)
    try:
        if p.suffix == ".csv":
            x = _read_csv(p)
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
    return x


class FileData(Dataset):
    """Your own data from a file: ``.npy``, ``.npz`` or ``.csv``, one example per row (first axis).

    - ``.npy``: one array of shape ``(num_examples, *event_shape)``.
    - ``.npz``: the only array in it, or the one named ``key`` (default: ``x`` or ``data``).
    - ``.csv``: numbers separated by commas, one example per line; a first line of names is a
      header and is skipped.

    The examples are shuffled with the run's seed and split into a training set and a held-out
    set holding ``heldout_fraction`` of them (at least one). The file is validated when read:
    shape, emptiness, and finiteness, with the index of the first bad entry (a row of the file);
    `split` then applies the model family's check (e.g. binary data for binomial diffusion).

    **Arguments:**

    - `path`: the file.
    - `heldout_fraction`: the fraction held out for evaluation, in (0, 1); default 0.1.
    - `key`: the array's name inside an ``.npz`` file.
    """

    path: str = eqx.field(static=True)
    heldout_fraction: float = eqx.field(static=True, default=0.1)
    key: str | None = eqx.field(static=True, default=None)

    def __init__(self, path: str | os.PathLike, heldout_fraction: float = 0.1, key: str | None = None):
        self.path = str(path)
        self.heldout_fraction = heldout_fraction
        self.key = key

    def __check_init__(self):
        suffix = Path(self.path).suffix
        if suffix not in DATA_SUFFIXES:
            raise ValueError(
                f"The data file must be a {', '.join(DATA_SUFFIXES[:-1])} or {DATA_SUFFIXES[-1]} file, got "
                f"{self.path!r}. Save a numeric array with np.save, or write a CSV with one example per row."
            )
        f = self.heldout_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f < 1.0:
            raise ValueError(f"`heldout_fraction` must lie strictly inside (0, 1), got {f!r}.")

    def array(self) -> np.ndarray:
        """Every example in the file, float32, validated (read-only; cached until the file changes)."""
        p = Path(self.path)
        if not p.is_file():
            raise FileNotFoundError(
                f"No data file at {self.path!r}. Give the path of a .npy, .npz or .csv file with one example per row."
            )
        st = p.stat()
        return _read(str(p.resolve()), self.key, (st.st_mtime_ns, st.st_size))

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
        x = self.array()
        n = len(x)
        if n < 2:
            raise ValueError(
                f"The data file {self.path!r} holds {n} example; at least 2 are needed (one to train on, one held out)."
            )
        num_test = min(n - 1, max(1, round(self.heldout_fraction * n)))
        order = np.random.default_rng(seed).permutation(n)
        return x[order[num_test:]], x[order[:num_test]]

    def split(self, seed: int, check: Callable[..., np.ndarray] = check_data, standardise: bool = True) -> Split:
        # the family's check on the whole file first, so an error's index is a row of the file
        check(self.array(), self.event_shape, f"data file {self.path!r}")
        return super().split(seed, check, standardise)
