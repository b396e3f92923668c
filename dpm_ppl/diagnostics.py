"""ArviZ DataTrees and figures for trained models.

Results land as an `xarray.DataTree` (ArviZ 1.x's data model), written to netCDF:

- ``prior_predictive``: samples x⁰ ~ p(x⁰) from the trained model, dims (chain, draw, dim);
- ``observed_data``: the held-out data;
- ``bound``: the bound's terms per held-out example, in bits (dims: datum);
- ``training``: the training trace (loss in bits per example by step; held-out K by step);
- ``schedule``: β_t by t.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib


matplotlib.use("Agg")  # headless: figures go to files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402


__all__ = ["fit_datatree", "plot_betas", "plot_loss", "plot_samples", "plot_sequences", "plot_trajectories"]


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).reshape(len(x), -1)


def fit_datatree(
    samples: np.ndarray,
    held_out: np.ndarray,
    bound_bits: dict[str, np.ndarray],
    history: dict,
    betas: np.ndarray,
) -> xr.DataTree:
    """Collect a fit's samples, data, per-example bound, training trace and schedule in one DataTree."""
    samples, held_out = _flat(samples), _flat(held_out)
    groups = {
        "prior_predictive": xr.Dataset({"x0": (("chain", "draw", "dim"), samples[None])}),
        "observed_data": xr.Dataset({"x0": (("datum", "dim"), held_out)}),
        "bound": xr.Dataset({name: (("datum",), np.asarray(v)) for name, v in bound_bits.items()}),
        "training": xr.Dataset(
            {
                "loss_bits": (("step",), np.asarray(history["loss_bits"])),
                "heldout_K_bits": (("eval_step",), np.asarray(history["eval_K_bits"])),
            },
            coords={"step": np.asarray(history["step"]), "eval_step": np.asarray(history["eval_step"])},
        ),
        "schedule": xr.Dataset({"beta": (("t",), np.asarray(betas))}, coords={"t": np.arange(1, len(betas) + 1)}),
    }
    groups["bound"].attrs["units"] = "bits per example"
    return xr.DataTree.from_dict({f"/{name}": ds for name, ds in groups.items()})


def _scatter(ax, x: np.ndarray, title: str, color: str) -> None:
    x = _flat(x)
    ax.scatter(x[:, 0], x[:, 1] if x.shape[1] > 1 else np.zeros(len(x)), s=1, alpha=0.4, color=color)
    ax.set_title(title)
    ax.set_aspect("equal")


def _is_binary(*arrays: np.ndarray) -> bool:
    return all(np.isin(np.asarray(x), (0, 1)).all() for x in arrays)


def _raster(ax, x: np.ndarray, title: str, rows: int) -> None:
    x = _flat(x)[:rows]
    ax.imshow(x, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1)
    ax.set_title(title)
    ax.set_xlabel("bin")
    ax.set_ylabel("sequence")


def plot_sequences(data: np.ndarray, samples: np.ndarray, path: str | Path, rows: int = 50) -> None:
    """Binary sequences as rasters (one row per sequence, black = 1): held-out data beside model samples.

    The paper's heartbeat figure shows its samples this way (§3.1.2).
    """
    fig, axes = plt.subplots(1, 2, figsize=(8, 5), sharey=True)
    _raster(axes[0], data, "held-out data", rows)
    _raster(axes[1], samples, "model samples", rows)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_samples(data: np.ndarray, samples: np.ndarray, path: str | Path) -> None:
    """Samples from the model beside held-out data: binary data as rasters (`plot_sequences`),
    otherwise a scatter of the first two dims."""
    if _is_binary(data, samples):
        plot_sequences(data, samples, path)
        return
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    _scatter(axes[0], data, "held-out data", "tab:blue")
    _scatter(axes[1], samples, "model samples", "tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_trajectories(forward: np.ndarray, reverse: np.ndarray, path: str | Path) -> None:
    """The paper's Fig. 1: forward trajectory (top) and reverse trajectory (bottom) at t = 0, T/2, T
    (binary data as rasters of sequences).

    ``forward`` and ``reverse`` are x⁰…x^T, shape (T + 1, num_points, d).
    """
    T = forward.shape[0] - 1
    ts = [0, T // 2, T]
    binary = _is_binary(forward, reverse)
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.5), sharex=True, sharey=True)
    for j, t in enumerate(ts):
        if binary:  # rasters of the first 30 sequences
            _raster(axes[0, j], forward[t], f"forward $q(x^{{{t}}})$", 30)
            _raster(axes[1, j], reverse[t], f"reverse $p(x^{{{t}}})$", 30)
            continue
        _scatter(axes[0, j], forward[t], f"forward $q(x^{{{t}}})$", "tab:blue")
        _scatter(axes[1, j], reverse[t], f"reverse $p(x^{{{t}}})$", "tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_loss(history: dict, path: str | Path) -> None:
    """The training bound (minibatch estimate) and the held-out K against steps, in bits."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["step"], -np.asarray(history["loss_bits"]), lw=0.8, label="training K (minibatch)")
    ax.plot(history["eval_step"], history["eval_K_bits"], "o-", label="held-out K")
    lo = np.percentile(-np.asarray(history["loss_bits"]), 5) if history["loss_bits"] else 0
    ax.set_ylim(bottom=lo)
    ax.set_xlabel("step")
    ax.set_ylabel("bits per example")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_betas(betas: np.ndarray, path: str | Path, initial: np.ndarray | None = None) -> None:
    """β_t against t on a log scale (learned and, if given, initial)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    t = np.arange(1, len(betas) + 1)
    if initial is not None:
        ax.semilogy(t, initial, "--", label="initial")
    ax.semilogy(t, betas, label="trained")
    ax.set_xlabel("t")
    ax.set_ylabel(r"$\beta_t$")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
