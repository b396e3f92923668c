"""Your own data: a `.npy`, `.npz` or `.csv` file as a `Dataset` (`FileData`), and the CSV reader."""

from __future__ import annotations

import csv
import functools
import math
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import numpy as np

from .._checks import check_data
from .._warnings import DataWarning
from ._base import Dataset, Split, constant_columns, moments


__all__ = ["FileData", "read_csv"]

#: A column is *near-constant* when its sd is below this times the median sd of the non-constant columns.
NEAR_CONSTANT_RATIO = 1e-3
#: Fewer training rows than this (or than ``ROWS_PER_COLUMN`` per column) is tiny data.
MIN_TRAIN_ROWS = 50
ROWS_PER_COLUMN = 10


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
    header, header_line = None, None
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
        # fields over `Dataset`'s read-only properties: sound for reads, but pyright flags setting them
        self.validation_fraction = validation_fraction  # pyright: ignore[reportIncompatibleMethodOverride]
        self.per_column = per_column  # pyright: ignore[reportIncompatibleMethodOverride]
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
            mean, sd = moments(flat)
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
                    DataWarning,
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
                        DataWarning,
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
                DataWarning,
                skip_file_prefixes=_PACKAGE_DIR,
            )

    def split(self, seed: int, check: Callable[..., np.ndarray] = check_data, standardise: bool = True) -> Split:
        # the family's check on the whole file first, so an error's index is a row of the file
        check(self.array(), self.event_shape, f"data file {self.path!r}")
        return super().split(seed, check, standardise)
