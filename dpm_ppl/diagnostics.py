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
from matplotlib.ticker import MaxNLocator  # noqa: E402


__all__ = [
    "fit_datatree",
    "plot_betas",
    "plot_ess",
    "plot_images",
    "plot_loss",
    "plot_posterior",
    "plot_rank",
    "plot_samples",
    "plot_sequences",
    "plot_trajectories",
]


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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


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


def _is_image(x: np.ndarray) -> bool:
    """Images: examples of event shape (H, W) or (C, H, W) with C ∈ {1, 3} (`dpm_ppl.images`)."""
    x = np.asarray(x)
    return x.ndim == 3 or (x.ndim == 4 and x.shape[1] in (1, 3))


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
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for ax, x, title in ((axes[0], data, "held-out data"), (axes[1], samples, "model samples")):
        grid = _grid(x, lo, hi, cols)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_samples(data: np.ndarray, samples: np.ndarray, path: str | Path) -> None:
    """Samples from the model beside held-out data: images as grids (`plot_images`), binary data as
    rasters (`plot_sequences`), otherwise a scatter of the first two dims."""
    if _is_image(data) and _is_image(samples):
        plot_images(data, samples, path)
        return
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
    if _is_image(forward[0]):  # a grid of 8 images per panel
        lo, hi = np.percentile(forward[0], [0.5, 99.5])
        fig, axes = plt.subplots(2, 3, figsize=(10, 4))
        for j, t in enumerate(ts):
            for i, (x, name) in enumerate(((forward, "forward $q"), (reverse, "reverse $p"))):
                grid = _grid(x[t], lo, hi, cols=8, rows=1)
                axes[i, j].imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
                axes[i, j].set_title(f"{name}(x^{{{t}}})$")
                axes[i, j].axis("off")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return
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


def plot_posterior(observed, draws: np.ndarray, background: np.ndarray, path: str | Path, shown: int = 6) -> None:
    """A posterior query's answer: observations, hidden truth and posterior draws.

    ``observed`` is a `dpm_ppl.query_script.Observed` (its ``observations["y"]``, ``["mask"]`` and
    ``truth`` are drawn when present); ``draws`` has shape (chain, draw, datum, *event). 2-D data: the
    model's data in grey, each observation linked to its posterior mean, and the draws of a few data;
    binary sequences: rasters of truth, observation (grey = unobserved), posterior mean and one draw.
    """
    flat = draws.reshape((-1,) + draws.shape[2:])
    flat = flat.reshape(flat.shape[:2] + (-1,))  # (draws, datum, dim)
    y = observed.observations.get("y")
    y = None if y is None else _flat(np.asarray(y))
    truth = None if observed.truth is None else _flat(observed.truth)
    if draws.ndim >= 5 and _is_image(draws[0, 0]):  # (chain, draw, datum, [C,] H, W)
        _plot_posterior_images(observed, draws, path)
        return
    if _is_binary(flat):
        mask = observed.observations.get("mask")
        shown_y = y if mask is None else np.where(np.broadcast_to(np.asarray(mask), y.shape), y, 0.5)
        panels = [
            ("truth", truth),
            ("observed (grey: unknown)", shown_y),
            ("posterior mean", flat.mean(0)),
            ("one posterior draw", flat[0]),
        ]
        panels = [(t, a) for t, a in panels if a is not None]
        fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 5), sharey=True)
        for ax, (title, a) in zip(axes, panels):
            _raster(ax, a, title, 50)
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharex=True, sharey=True)
        mean = flat.mean(0)
        for ax in axes:
            bg = _flat(background)
            ax.scatter(bg[:, 0], bg[:, 1], s=1, color="0.8", label="data")
            ax.set_aspect("equal")
        if y is not None:
            for a, b in zip(y, mean):
                axes[0].plot([a[0], b[0]], [a[1], b[1]], color="0.5", lw=0.5)
            axes[0].scatter(y[:, 0], y[:, 1], s=10, marker="x", color="tab:red", label="observation")
        if truth is not None:
            axes[0].scatter(truth[:, 0], truth[:, 1], s=8, color="tab:green", label="truth")
        axes[0].scatter(mean[:, 0], mean[:, 1], s=8, color="tab:blue", label="posterior mean")
        axes[0].legend(loc="upper right", fontsize=7)
        axes[0].set_title("observations pulled to their posterior means")
        for i in range(min(shown, flat.shape[1])):
            color = f"C{i}"
            axes[1].scatter(flat[:300, i, 0], flat[:300, i, 1], s=2, alpha=0.5, color=color)
            if y is not None:
                axes[1].scatter(y[i, 0], y[i, 1], s=40, marker="x", color=color)
        axes[1].set_title(f"posterior draws of {min(shown, flat.shape[1])} data (x: observation)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_posterior_images(observed, draws: np.ndarray, path: str | Path, num_data: int = 16) -> None:
    """Image queries: truth, observation (unknown pixels black), posterior mean and two draws, as grids."""
    flat = draws.reshape((-1,) + draws.shape[2:])[:, :num_data]
    y = observed.observations.get("y")
    truth = observed.truth
    ref = truth if truth is not None else flat[0]
    lo, hi = np.percentile(np.asarray(ref), [0.5, 99.5])
    panels = []
    if truth is not None:
        panels.append(("truth", np.asarray(truth)[:num_data]))
    if y is not None:
        y = np.asarray(y)[:num_data]
        mask = observed.observations.get("mask")
        panels.append(("observed", y if mask is None else np.where(np.asarray(mask), y, lo)))
    panels += [("posterior mean", flat.mean(0)), ("posterior draw", flat[0]), ("another draw", flat[-1])]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3))
    for ax, (title, x) in zip(axes, panels):
        grid = _grid(x, lo, hi, cols=4, rows=4)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_ess(tree: xr.DataTree, path: str | Path) -> None:
    """SMC's effective sample size at each step of the reverse chain (median and range over runs and data)."""
    ess = tree["sample_stats"]["ess"]
    step = ess["step"].values
    values = ess.values.reshape(ess.shape[0], ess.shape[1], -1).transpose(1, 0, 2).reshape(len(step), -1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.fill_between(step, values.min(1), values.max(1), alpha=0.3, label="range over runs and data")
    ax.plot(step, np.median(values, 1), label="median")
    ax.set_xlabel("t (the state x^t produced)")
    ax.set_ylabel("ESS")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rank(tree: xr.DataTree, path: str | Path, num_data: int = 3) -> None:
    """Rank plots of x⁰ for the first data across MCMC chains (`arviz_plots.plot_rank`): flat when mixed."""
    import arviz_plots

    sub = tree["posterior"].dataset[["x0"]].isel(datum=slice(0, num_data))
    sub = sub.assign_coords({d: np.arange(n) for d, n in sub.sizes.items() if d not in sub.coords})
    pc = arviz_plots.plot_rank(xr.DataTree.from_dict({"posterior": sub}), var_names=["x0"])
    pc.savefig(path)
    plt.close("all")
