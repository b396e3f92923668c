"""Figures of tabular data and of posterior queries: written, non-empty, labelled with the column names, and
robust to one column, many columns, hidden entries and observations of another shape."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from dpm_ppl import plots


RNG = np.random.default_rng(0)


def _table(d, n=300):
    return (RNG.normal(size=(n, d)) * np.linspace(1.0, 50.0, d) + np.arange(d)).astype(np.float32)


def _labels(fig):
    return {t.get_text() for ax in fig.axes for t in [ax.xaxis.label, ax.yaxis.label, ax.title]} | {
        t.get_text() for ax in fig.axes for t in ax.get_xticklabels()
    }


@pytest.mark.parametrize("d", [1, 2, 20])
def test_pairs_and_marginals(tmp_path, d):
    names = [f"feature_{j}" for j in range(d)]
    data, samples = _table(d), _table(d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on well-formed input
        pairs = plots.plot_pairs(data, samples, tmp_path / "pairs.png", names=names)
        marginals = plots.plot_marginals(data, samples, tmp_path / "marginals.png", names=names)
    for name in ("pairs.png", "marginals.png"):
        assert (tmp_path / name).stat().st_size > 1000
    shown = min(d, 8)
    assert set(names[:shown]) <= _labels(pairs) and not set(names[shown:]) & _labels(pairs)
    assert set(names) <= _labels(marginals)
    if d > 8:
        assert "the first 8 of 20 columns" in pairs.texts[0].get_text()


def test_pairs_without_names_and_with_non_finite_samples(tmp_path):
    samples = _table(3)
    samples[:, 1] = np.nan  # a column the model failed on
    fig = plots.plot_pairs(_table(3), samples, tmp_path / "pairs.png", max_columns=2)
    assert {"column 0", "column 1"} <= _labels(fig) and "column 2" not in _labels(fig)
    plots.plot_marginals(_table(3), samples, tmp_path / "marginals.png")
    assert (tmp_path / "marginals.png").stat().st_size > 0


def test_intervals(tmp_path):
    intervals = {
        "row": [0, 0, 1, 3],
        "column": [0, 2, 2, 1],
        "lower": [-1.0, 10.0, 12.0, 0.1],
        "median": [0.0, 15.0, 14.0, 0.2],
        "upper": [1.0, 20.0, 16.0, 0.3],
        "mean": [0.1, 15.0, 14.2, 0.2],
        "level": 0.9,
    }
    fig = plots.plot_intervals(intervals, tmp_path / "i.png", truth=[0.5, 30.0, 13.0, 0.25],
                                     names=["a", "b", "c"])  # fmt: skip
    assert (tmp_path / "i.png").stat().st_size > 1000
    assert {"a", "b", "c"} <= _labels(fig) and "75% covered" in fig.texts[0].get_text()
    empty = {k: [] for k in ("row", "column", "lower", "median", "upper")}
    plots.plot_intervals(empty, tmp_path / "none.png")
    assert (tmp_path / "none.png").stat().st_size > 0


def _draws(num_data, d, n=50):
    return RNG.normal(size=(2, n, num_data, d)).astype(np.float32)


@pytest.mark.parametrize("d", [1, 2, 5, 20])
def test_posterior_of_rows_hides_missing_entries(tmp_path, d):
    """Hidden entries (NaN) are not drawn as observed: the observed markers are exactly the finite entries."""
    truth = RNG.normal(size=(4, d)).astype(np.float32)
    y = truth.copy()
    y[:, 0] = np.nan
    fig = plots.plot_posterior({"y": y}, truth, _draws(4, d), _table(d), tmp_path / "p.png",
                               names=[f"n{j}" for j in range(d)])  # fmt: skip
    assert (tmp_path / "p.png").stat().st_size > 1000
    points = [c for ax in fig.axes for c in ax.collections if c.get_label() in ("observed", "observation")]
    finite = sum(int(np.isfinite(np.ma.filled(p.get_offsets(), np.nan)).all(1).sum()) for p in points)
    assert finite == (np.isfinite(y).all(1).sum() if d == 2 else np.isfinite(y[:, : min(d, 20)]).sum())


def test_posterior_with_a_mask_and_an_observation_of_another_shape(tmp_path):
    truth = RNG.normal(size=(3, 2)).astype(np.float32)
    masked = {"y": np.where([True, False], truth, 0.0), "mask": np.array([True, False])}
    fig = plots.plot_posterior(masked, truth, _draws(3, 2), _table(2), tmp_path / "m.png")
    (obs,) = [c for ax in fig.axes for c in ax.collections if c.get_label() == "observation"]
    drawn = np.isfinite(np.ma.filled(obs.get_offsets(), np.nan)).all(1)
    assert not drawn.any()  # the placeholder 0.0 is not drawn as observed
    short = {"y": truth[:, :1]}  # one value per datum: not drawable against x⁰ of 13 columns
    with pytest.warns(RuntimeWarning, match="not one value per coordinate"):
        plots.plot_posterior(short, None, _draws(3, 13), _table(13), tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 0


def test_posterior_of_binary_and_image_queries(tmp_path):
    bits = (RNG.uniform(size=(4, 20)) < 0.3).astype(np.float32)
    y = np.where(np.arange(20) < 10, bits, 0.0)
    draws = (RNG.uniform(size=(2, 8, 4, 20)) < 0.5).astype(np.float32)
    plots.plot_posterior({"y": y, "mask": np.arange(20) < 10}, bits, draws, bits, tmp_path / "b.png", "binary")
    images = RNG.uniform(size=(2, 4, 5, 8, 8)).astype(np.float32)
    y = images[0, 0].copy()
    y[:, :, 4:] = np.nan
    plots.plot_posterior({"y": y}, images[0, 0], images, images[0, 0], tmp_path / "i.png", "image")
    for name in ("b.png", "i.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_importing_never_switches_the_matplotlib_backend():
    """A notebook's backend survives `import dpm_ppl` and every module that draws (no `matplotlib.use`)."""
    code = (
        "import matplotlib; import dpm_ppl, dpm_ppl.plots, dpm_ppl.arviz; "
        "import dpm_ppl.cli._evaluate, dpm_ppl.cli._run, dpm_ppl.cli._query_script; "
        "print(matplotlib.get_backend())"
    )
    env = {**os.environ, "MPLBACKEND": "pdf"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().lower() == "pdf"
