"""Figures of trained models, of their likelihood and of posterior queries.

Figures of rows of numbers (tabular data): `plot_pairs` (a corner plot of data against samples),
`plot_marginals` (each column's histograms) and `plot_intervals` (posterior intervals of imputed
entries against the truth). Every figure is drawn on a `matplotlib.figure.Figure` object, which needs no
pyplot state: importing this module never changes the user's matplotlib backend (a notebook's stays).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import cast

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .infer._psis import KHAT_THRESHOLD


__all__ = [
    "plot_betas",
    "plot_ess",
    "plot_images",
    "plot_intervals",
    "plot_khat",
    "plot_loss",
    "plot_marginals",
    "plot_pairs",
    "plot_posterior",
    "plot_rank",
    "plot_samples",
    "plot_sequences",
    "plot_trajectories",
]


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).reshape(len(x), -1)


def _scatter(ax, x: np.ndarray, title: str, color: str) -> None:
    x = _flat(x)
    ax.scatter(x[:, 0], x[:, 1] if x.shape[1] > 1 else np.zeros(len(x)), s=1, alpha=0.4, color=color)
    ax.set_title(title)
    ax.set_aspect("equal")


#: how states are drawn: rows of numbers, binary sequences or images (`AbstractFamily.modality`, `Dataset.modality`)
MODALITIES = ("real", "binary", "image")


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"`modality` must be one of {MODALITIES}, got {modality!r}.")


def _raster(ax, x: np.ndarray, title: str, rows: int) -> None:
    x = _flat(x)[:rows]
    ax.imshow(x, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1)
    ax.set_title(title)
    ax.set_xlabel("bin")
    ax.set_ylabel("sequence")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_sequences(data: np.ndarray, samples: np.ndarray, path: str | Path, rows: int = 50) -> None:
    """Binary sequences as rasters (one row per sequence, black = 1): held-out data beside model samples.

    The paper's heartbeat figure shows its samples this way (§3.1.2).
    """
    fig = Figure(figsize=(8, 5))
    axes = fig.subplots(1, 2, sharey=True)
    _raster(axes[0], data, "held-out data", rows)
    _raster(axes[1], samples, "model samples", rows)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _grid(x: np.ndarray, lo: float, hi: float, cols: int = 8, rows: int = 8) -> np.ndarray:
    """The first rows × cols images tiled into one (H', W') or (H', W', 3) array in [0, 1], 1-pixel gaps."""
    x = np.asarray(x)[: rows * cols]
    if x.ndim == 4:  # (n, C, H, W) -> (n, H, W, C)
        x = np.moveaxis(x, 1, -1)
        x = x[..., 0] if x.shape[-1] == 1 else x
    x = np.clip((x - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    n, h, w = x.shape[:3]
    rows = -(-n // cols)
    out = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1) + x.shape[3:])
    for i in range(n):
        r, c = divmod(i, cols)
        out[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = x[i]
    return out


def plot_images(data: np.ndarray, samples: np.ndarray, path: str | Path, cols: int = 8) -> None:
    """Images as grids: held-out data beside model samples (64 of each), on the data's grey scale
    (its 0.5–99.5% range, shared by both panels; samples outside it are clipped)."""
    lo, hi = np.percentile(np.asarray(data), [0.5, 99.5])
    fig = Figure(figsize=(10, 5.4))
    axes = fig.subplots(1, 2)
    for ax, x, title in ((axes[0], data, "held-out data"), (axes[1], samples, "model samples")):
        grid = _grid(x, lo, hi, cols)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_samples(data: np.ndarray, samples: np.ndarray, path: str | Path, modality: str = "real") -> None:
    """Samples from the model beside held-out data: images (``modality="image"``) as grids (`plot_images`),
    binary data as rasters (`plot_sequences`), otherwise (``"real"``) a scatter of the first two dims."""
    _check_modality(modality)
    if modality == "image":
        plot_images(data, samples, path)
        return
    if modality == "binary":
        plot_sequences(data, samples, path)
        return
    fig = Figure(figsize=(8, 4))
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    _scatter(axes[0], data, "held-out data", "tab:blue")
    _scatter(axes[1], samples, "model samples", "tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_trajectories(
    forward: np.ndarray, reverse: np.ndarray, path: str | Path, modality: str = "real", units: str | None = None
) -> None:
    """The paper's Fig. 1: forward trajectory (top) and reverse trajectory (bottom) at t = 0, T/2, T
    (binary data as rasters of sequences, images as rows of 8).

    ``forward`` and ``reverse`` are x⁰…x^T, shape (T + 1, num_points, *event); ``units`` names them in the
    title (e.g. the standardised units of columns scaled one by one, where data units would squash x⁰ to a line).
    """
    _check_modality(modality)
    T = forward.shape[0] - 1
    ts = [0, T // 2, T]
    if modality == "image":  # a grid of 8 images per panel
        lo, hi = np.percentile(forward[0], [0.5, 99.5])
        fig = Figure(figsize=(10, 4))
        axes = fig.subplots(2, 3)
        for j, t in enumerate(ts):
            for i, (x, name) in enumerate(((forward, "forward $q"), (reverse, "reverse $p"))):
                grid = _grid(x[t], lo, hi, cols=8, rows=1)
                axes[i, j].imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
                axes[i, j].set_title(f"{name}(x^{{{t}}})$")
                axes[i, j].axis("off")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return
    binary = modality == "binary"
    fig = Figure(figsize=(10, 6.5))
    axes = fig.subplots(2, 3, sharex=True, sharey=True)
    for j, t in enumerate(ts):
        if binary:  # rasters of the first 30 sequences
            _raster(axes[0, j], forward[t], f"forward $q(x^{{{t}}})$", 30)
            _raster(axes[1, j], reverse[t], f"reverse $p(x^{{{t}}})$", 30)
            continue
        _scatter(axes[0, j], forward[t], f"forward $q(x^{{{t}}})$", "tab:blue")
        _scatter(axes[1, j], reverse[t], f"reverse $p(x^{{{t}}})$", "tab:orange")
    if units is not None:
        fig.suptitle(f"first two coordinates, {units}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_loss(history: dict, path: str | Path) -> None:
    """The training bound (minibatch estimate) and the validation K against steps, in bits, with the step
    whose parameters were kept (best validation K) marked."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    train = -np.asarray(history["loss_bits"], np.float64)
    val = np.asarray(history["eval_K_bits"], np.float64)
    ax.plot(history["step"], train, lw=0.8, label="training K (minibatch)")
    ax.plot(history["eval_step"], val, "o-", ms=3, label="validation K")
    best = history.get("best_step")
    if best is not None:
        ax.axvline(best, ls="--", c="grey", lw=0.8, label=f"kept: step {best}")
    # the early transient would squash the curves: from the lower 5th percentile of the two to the top
    curves = [c[np.isfinite(c)] for c in (train, val) if np.isfinite(c).any()]
    if curves:
        lo = min(np.percentile(c, 5) for c in curves)
        hi = max(c.max() for c in curves)
        pad = 0.05 * (hi - lo) + 1e-9
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("step")
    ax.set_ylabel("bits per example")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_betas(betas: np.ndarray, path: str | Path, initial: np.ndarray | None = None) -> None:
    """β_t against t on a log scale (learned and, if given, initial)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    t = np.arange(1, len(betas) + 1)
    if initial is not None:
        ax.semilogy(t, initial, "--", label="initial")
    ax.semilogy(t, betas, label="trained")
    ax.set_xlabel("t")
    ax.set_ylabel(r"$\beta_t$")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _datum_like(x, datum_shape: tuple[int, ...], what: str) -> np.ndarray | None:
    """``x`` as a float array of one value per coordinate of the data (datum, *event), else None with a warning."""
    if x is None:
        return None
    x = np.asarray(x, np.float64)
    if x.shape != tuple(datum_shape):
        warnings.warn(
            f"posterior.png: `{what}` has shape {x.shape}, not one value per coordinate of x⁰ {tuple(datum_shape)}; "
            "it is not drawn.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return x


def _known(observations: dict, y: np.ndarray | None, datum_shape: tuple[int, ...]) -> np.ndarray | None:
    """Which coordinates of ``y`` are observed: the query's ``mask`` (if it fits) and not NaN."""
    if y is None:
        return None
    known = np.isfinite(y)
    mask = observations.get("mask")
    if mask is not None:
        try:
            known &= np.broadcast_to(np.asarray(mask, bool), datum_shape)
        except ValueError:
            warnings.warn(f"posterior.png: `mask` of shape {np.shape(mask)} does not fit the data; ignored.",
                          RuntimeWarning, stacklevel=3)  # fmt: skip
    return known


def plot_posterior(
    observations: dict,
    truth: np.ndarray | None,
    draws: np.ndarray,
    background: np.ndarray,
    path: str | Path,
    modality: str = "real",
    shown: int = 6,
    names: list[str] | None = None,
) -> Figure:
    """A posterior query's answer: observations, hidden truth and posterior draws.

    ``observations`` are the query's arguments: its ``"y"`` and ``"mask"`` and the ``truth`` are drawn when
    they hold one value per coordinate of x⁰ (entries that are NaN or outside ``mask`` are hidden, and never
    drawn as observed); ``draws`` has shape (chain, draw, datum, *event); ``modality`` as in `plot_samples`.
    2-D data: the model's data in grey, each observation linked to its posterior mean, and the draws of a
    few data; binary sequences: rasters of truth, observation (grey = unobserved), posterior mean and one
    draw; images: grids; other rows of numbers: for a few data, each column's posterior draws (box plots,
    in units of the held-out data's column mean and sd) with the observed values and the truth.
    """
    _check_modality(modality)
    draws = np.asarray(draws)
    datum_shape = draws.shape[2:]
    y = _datum_like(observations.get("y"), datum_shape, "y")
    known = _known(observations, y, datum_shape)
    truth = _datum_like(truth, datum_shape, "truth")
    if modality == "image":  # (chain, draw, datum, [C,] H, W)
        fig = _plot_posterior_images(y, known, truth, draws)
    else:
        flat = draws.reshape((-1,) + datum_shape)
        flat = flat.reshape(flat.shape[:2] + (-1,))  # (draws, datum, dim)
        if y is not None:
            assert known is not None  # `_known` is None only without `y`
            y = _flat(np.where(known, y, np.nan))
        truth = None if truth is None else _flat(truth)
        if modality == "binary":
            fig = _plot_posterior_binary(y, truth, flat)
        elif flat.shape[-1] == 2:
            fig = _plot_posterior_2d(y, truth, flat, _flat(background), shown)
        else:
            fig = _plot_posterior_columns(y, truth, flat, _flat(background), shown, names)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fig


def _plot_posterior_binary(y, truth, flat) -> Figure:
    panels = [
        ("truth", truth),
        ("observed (grey: unknown)", None if y is None else np.where(np.isnan(y), 0.5, y)),
        ("posterior mean", flat.mean(0)),
        ("one posterior draw", flat[0]),
    ]
    panels = [(t, a) for t, a in panels if a is not None]
    fig = Figure(figsize=(3 * len(panels), 5))
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    for ax, (title, a) in zip(axes, panels):
        _raster(ax, a, title, 50)
    return fig


def _plot_posterior_2d(y, truth, flat, bg, shown) -> Figure:
    fig = Figure(figsize=(10, 5))
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    mean = flat.mean(0)
    for ax in axes:
        ax.scatter(bg[:, 0], bg[:, 1], s=1, color="0.8", label="data")
        ax.set_aspect("equal")
    if y is not None:  # NaN (hidden) coordinates are not drawn
        for a, b in zip(y, mean):
            axes[0].plot([a[0], b[0]], [a[1], b[1]], color="0.5", lw=0.5)
        axes[0].scatter(y[:, 0], y[:, 1], s=10, marker="x", color="tab:red", label="observation")
    if truth is not None:
        axes[0].scatter(truth[:, 0], truth[:, 1], s=8, color="tab:green", label="truth")
    axes[0].scatter(mean[:, 0], mean[:, 1], s=8, color="tab:blue", label="posterior mean")
    axes[0].legend(loc="upper right", fontsize=7)
    axes[0].set_title("observations pulled to their posterior means")
    n = min(shown, flat.shape[1])
    for i in range(n):
        color = f"C{i}"
        axes[1].scatter(flat[:300, i, 0], flat[:300, i, 1], s=2, alpha=0.5, color=color)
        if y is not None:
            axes[1].scatter(y[i, 0], y[i, 1], s=40, marker="x", color=color)
    axes[1].set_title(f"posterior draws of {n} data (x: observation)")
    return fig


def _plot_posterior_columns(y, truth, flat, bg, shown, names, max_columns: int = 20) -> Figure:
    """Rows of numbers: per datum, each column's draws standardised by the held-out column mean and sd."""
    d = flat.shape[-1]
    k = min(d, max_columns)
    n = min(shown, flat.shape[1])
    centre = np.nanmean(bg, 0) if len(bg) else np.zeros(d)
    spread = np.nanstd(bg, 0) if len(bg) > 1 else np.ones(d)
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)

    def z(a):
        return (a[..., :k] - centre[:k]) / spread[:k]

    labels = _labels(names, d)[:k]
    fig = Figure(figsize=(max(7.0, 0.45 * k + 2), 2.2 * n + 0.8))
    axes = np.atleast_1d(fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0])
    pos = np.arange(k)
    for i, ax in enumerate(axes):
        d_i = z(flat[:, i])
        ok = [col[np.isfinite(col)] for col in d_i.T]
        ax.boxplot(ok, positions=pos, widths=0.6, showfliers=False, medianprops={"color": "tab:blue"})
        if truth is not None:
            ax.scatter(pos, z(truth[i]), s=18, color="tab:green", zorder=3, label="truth")
        if y is not None:  # hidden entries are NaN: not drawn
            ax.scatter(pos, z(y[i]), s=30, marker="x", color="tab:red", zorder=4, label="observed")
        ax.set_ylabel(f"datum {i}")
        ax.axhline(0.0, color="0.85", lw=0.8, zorder=0)
        if i == 0 and (truth is not None or y is not None):
            ax.legend(loc="upper right", fontsize=7)
    axes[-1].set_xticks(pos, labels, rotation=60 if k > 6 else 0, ha="right" if k > 6 else "center", fontsize=8)
    more = f" (first {k} of {d} columns)" if k < d else ""
    title = f"posterior draws per column{more}\nas (x − mean)/sd of the held-out column (box 25–75%, whiskers 1.5 IQR)"
    fig.suptitle(title, fontsize=9)
    return fig


def _plot_posterior_images(y, known, truth, draws: np.ndarray, num_data: int = 16) -> Figure:
    """Image queries: truth, observation (unknown pixels black), posterior mean and two draws, as grids."""
    flat = draws.reshape((-1,) + draws.shape[2:])[:, :num_data]
    ref = truth if truth is not None else flat[0]
    lo, hi = np.nanpercentile(np.asarray(ref), [0.5, 99.5])
    panels = []
    if truth is not None:
        panels.append(("truth", np.asarray(truth)[:num_data]))
    if y is not None:
        panels.append(("observed", np.where(known, y, lo)[:num_data]))
    panels += [("posterior mean", flat.mean(0)), ("posterior draw", flat[0]), ("another draw", flat[-1])]
    fig = Figure(figsize=(2.6 * len(panels), 3))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, x) in zip(axes, panels):
        grid = _grid(x, lo, hi, cols=4, rows=4)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    return fig


# -- tabular data -----------------------------------------------------------------------------------


def _labels(names: list[str] | None, d: int) -> list[str]:
    """Column labels: the names given (when there is one per column), else ``column j``."""
    if names is not None and len(names) == d:
        return [str(n) for n in names]
    if names is not None:
        warnings.warn(f"{len(names)} column names for {d} columns: numbered instead.", RuntimeWarning, stacklevel=3)
    return [f"column {j}" for j in range(d)]


def _finite(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a)]


def _bins(*columns: np.ndarray, num: int = 30) -> np.ndarray:
    values = np.concatenate([_finite(c) for c in columns]) if columns else np.zeros(0)
    if values.size == 0:
        return np.linspace(-0.5, 0.5, num + 1)
    lo, hi = np.percentile(values, [0.5, 99.5])
    if not hi > lo:
        lo, hi = values.min() - 0.5, values.max() + 0.5
    return np.linspace(lo, hi, num + 1)


def _histograms(ax, data: np.ndarray, samples: np.ndarray) -> None:
    """One column: the data's histogram (filled) and the samples' (line) on shared bins, as densities."""
    bins = _bins(data, samples)
    a, b = _finite(data), _finite(samples)
    if a.size:
        ax.hist(a, bins, density=True, color="tab:blue", alpha=0.45, label="held-out data")
    if b.size:
        ax.hist(b, bins, density=True, histtype="step", color="tab:orange", lw=1.2, label="model samples")
    else:
        ax.text(0.5, 0.5, "no finite samples", transform=ax.transAxes, ha="center", fontsize=7)
    ax.set_yticks([])


def _subsample(x: np.ndarray, n: int) -> np.ndarray:
    return x if len(x) <= n else x[np.linspace(0, len(x) - 1, n).astype(int)]


def plot_pairs(data: np.ndarray, samples: np.ndarray, path: str | Path, names: list[str] | None = None,
               max_columns: int = 8) -> Figure:  # fmt: skip
    """A corner plot of held-out data (blue) against model samples (orange): histograms on the diagonal,
    scatters below it, for the first ``max_columns`` columns (the title says which when there are more).

    ``data`` and ``samples`` have shape (n, *event), flattened to columns; ``names`` labels the columns.
    """
    data, samples = _flat(np.asarray(data, np.float64)), _flat(np.asarray(samples, np.float64))
    d = data.shape[1]
    if samples.shape[1] != d:
        raise ValueError(f"`data` has {d} columns but `samples` {samples.shape[1]}.")
    k = max(1, min(d, int(max_columns)))
    labels = _labels(names, d)[:k]
    side = min(16.0, 1.9 * k + 1.2)
    fig = Figure(figsize=(side, side))
    axes = fig.subplots(k, k, squeeze=False)
    a, b = _subsample(data, 2_000), _subsample(samples, 2_000)
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                _histograms(ax, data[:, i], samples[:, i])
            else:
                ax.scatter(a[:, j], a[:, i], s=1, alpha=0.3, color="tab:blue", rasterized=True)
                ax.scatter(b[:, j], b[:, i], s=1, alpha=0.3, color="tab:orange", rasterized=True)
                ax.set_xlim(*_bins(data[:, j], samples[:, j])[[0, -1]])
                ax.set_ylim(*_bins(data[:, i], samples[:, i])[[0, -1]])
            if i == k - 1:
                ax.set_xlabel(labels[j], fontsize=8)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i], fontsize=8)
            elif j > 0:
                ax.set_yticklabels([])
            ax.tick_params(labelsize=6)
    if k == 1:
        axes[0, 0].set_xlabel(labels[0], fontsize=8)
    axes[0, 0].legend(loc="upper right", fontsize=6)
    title = "held-out data (blue) and model samples (orange)"
    if k < d:
        title += f": the first {k} of {d} columns ({', '.join(labels)})"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def plot_marginals(data: np.ndarray, samples: np.ndarray, path: str | Path, names: list[str] | None = None) -> Figure:
    """Each column's histogram, held-out data (filled) against model samples (line), on shared bins
    (the first 48 columns; the title says so when there are more)."""
    data, samples = _flat(np.asarray(data, np.float64)), _flat(np.asarray(samples, np.float64))
    d = data.shape[1]
    if samples.shape[1] != d:
        raise ValueError(f"`data` has {d} columns but `samples` {samples.shape[1]}.")
    k = min(d, 48)
    labels = _labels(names, d)
    cols = min(k, 6)
    rows = -(-k // cols)
    fig = Figure(figsize=(2.6 * cols, 2.1 * rows + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for j, ax in enumerate(axes):
        if j >= k:
            ax.set_visible(False)
            continue
        _histograms(ax, data[:, j], samples[:, j])
        ax.set_title(labels[j], fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0].legend(loc="upper right", fontsize=6)
    more = f" (the first {k} of {d} columns)" if k < d else ""
    fig.suptitle(f"marginals: held-out data and model samples{more}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def plot_khat(khat: np.ndarray, path: str | Path, x0: np.ndarray | None = None) -> None:
    """k̂ per datum with the 0.5 (finite variance) and 0.7 (reliability) lines; 2-D data also coloured by k̂."""
    khat = np.asarray(khat, np.float64)
    two_d = x0 is not None and np.asarray(x0).reshape(len(khat), -1).shape[1] == 2
    fig = Figure(figsize=(11 if two_d else 6, 4))
    axes = fig.subplots(1, 2 if two_d else 1, squeeze=False)
    ax = axes[0, 0]
    finite = np.isfinite(khat)
    ax.scatter(
        np.flatnonzero(finite), khat[finite], s=6, c=np.where(khat[finite] > KHAT_THRESHOLD, "tab:red", "tab:blue")
    )
    ax.axhline(0.5, ls=":", c="grey", label="0.5: finite variance")
    ax.axhline(KHAT_THRESHOLD, ls="--", c="tab:red", label=f"{KHAT_THRESHOLD}: unreliable above")
    ax.set_xlabel("datum")
    ax.set_ylabel(r"PSIS $\hat k$ of the importance weights")
    ax.legend(loc="best", fontsize=8)
    if two_d:
        x = np.asarray(x0).reshape(len(khat), 2)
        sc = axes[0, 1].scatter(x[finite, 0], x[finite, 1], c=khat[finite], s=6, cmap="viridis")
        axes[0, 1].set_aspect("equal")
        axes[0, 1].set_title(r"data coloured by $\hat k$")
        fig.colorbar(sc, ax=axes[0, 1])
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_intervals(intervals: dict, path: str | Path, truth: np.ndarray | None = None,
                   names: list[str] | None = None, max_entries: int = 30) -> Figure:  # fmt: skip
    """Posterior intervals of hidden entries (imputation), one panel per column, against the truth.

    ``intervals`` holds equal-length 1-D sequences over the hidden entries: ``row`` (the datum), ``column``
    (its column index), ``lower``, ``median``, ``upper`` and optionally ``mean`` (and a scalar ``level``,
    e.g. 0.9), as `inference/impute.py` writes them into query.json; ``truth`` the hidden values, or None;
    ``names`` the column names. At most ``max_entries`` entries per column are drawn.
    """
    row = np.asarray(intervals["row"], int)
    column = np.asarray(intervals["column"], int)
    lower, median, upper = (np.asarray(intervals[k], np.float64) for k in ("lower", "median", "upper"))
    mean = np.asarray(intervals["mean"], np.float64) if "mean" in intervals else None
    level = intervals.get("level")
    if truth is not None:
        truth = np.asarray(truth, np.float64).ravel()
        if truth.shape != row.shape:
            warnings.warn(f"plot_intervals: {truth.size} truths for {row.size} entries; not drawn.",
                          RuntimeWarning, stacklevel=2)  # fmt: skip
            truth = None
    d = int(column.max()) + 1 if column.size else 1
    labels = _labels(names, len(names)) if names is not None and len(names) >= d else _labels(None, d)
    present = sorted(set(column.tolist()))[:24]
    if not present:
        fig = Figure(figsize=(4, 2))
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no hidden entries", ha="center", va="center")
        ax.axis("off")
        fig.savefig(path, dpi=110)
        return fig
    cols = min(len(present), 3)
    rows = -(-len(present) // cols)
    fig = Figure(figsize=(4.4 * cols, 2.6 * rows + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, j in zip(axes, present):
        sel = np.flatnonzero(column == j)[:max_entries]
        x = np.arange(len(sel))
        ax.vlines(x, lower[sel], upper[sel], color="tab:blue", lw=2, alpha=0.6, label="interval")
        ax.scatter(x, median[sel], s=12, color="tab:blue", zorder=3, label="median")
        if mean is not None:
            ax.scatter(x, mean[sel], s=14, marker="x", color="tab:purple", zorder=3, label="mean")
        if truth is not None:
            inside = (truth[sel] >= lower[sel]) & (truth[sel] <= upper[sel])
            ax.scatter(x, truth[sel], s=16, color=np.where(inside, "tab:green", "tab:red"), zorder=4, label="truth")
        ax.set_xticks(x, [str(r) for r in row[sel]], fontsize=6, rotation=90 if len(sel) > 12 else 0)
        ax.set_xlabel("row", fontsize=7)
        ax.set_title(labels[j], fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes[len(present) :]:
        ax.set_visible(False)
    axes[0].legend(loc="best", fontsize=6)
    what = f"{100 * level:.0f}% " if isinstance(level, (int, float)) else ""
    title = f"posterior {what}intervals of the hidden entries"
    if truth is not None:
        title += f" (truth green inside, red outside: {np.mean((truth >= lower) & (truth <= upper)):.0%} covered)"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def plot_ess(tree: xr.DataTree, path: str | Path) -> None:
    """SMC's effective sample size at each step of the reverse chain (median and range over runs and data)."""
    ess = cast(xr.DataArray, tree["sample_stats"]["ess"])  # a variable of the group (DataTree[...] is a union)
    step = ess["step"].values
    values = ess.values.reshape(ess.shape[0], ess.shape[1], -1).transpose(1, 0, 2).reshape(len(step), -1)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.fill_between(step, values.min(1), values.max(1), alpha=0.3, label="range over runs and data")
    ax.plot(step, np.median(values, 1), label="median")
    ax.set_xlabel("t (the state x^t produced)")
    ax.set_ylabel("ESS")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_rank(tree: xr.DataTree, path: str | Path, num_data: int = 3) -> None:
    """Rank plots of x⁰ for the first data across MCMC chains (`arviz_plots.plot_rank`): flat when mixed."""
    import arviz_plots

    sub = tree["posterior"].dataset[["x0"]].isel(datum=slice(0, num_data))
    sub = sub.assign_coords({d: np.arange(n) for d, n in sub.sizes.items() if d not in sub.coords})
    pc = arviz_plots.plot_rank(xr.DataTree.from_dict({"posterior": sub}), var_names=["x0"])
    pc.savefig(path)
    import matplotlib.pyplot as plt  # arviz-plots draws through pyplot: close its figure, and only that

    plt.close(pc.viz["figure"].item())
