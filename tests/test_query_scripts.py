"""`dpm query`: the shipped query scripts end to end on briefly trained runs, in data units; your own
observations (``--observations`` .npz and .csv), checked before any sampling; and the script errors."""

import json
import time

import numpy as np
import pytest
import xarray as xr

import dpm_ppl as dpm
from dpm_ppl import load_run
from dpm_ppl.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    scripts = (
        ("models/swiss_roll.py", "swiss"),
        ("models/binary_heartbeat.py", "heartbeat"),
        ("models/digits.py", "digits"),
    )
    for script, name in scripts:
        args = ["fit", script, "--out", str(root / name), "--steps", "40", "--T", "5", "--no-progress"]
        assert main(args + ["--num-samples", "100"]) == 0
    return root


@pytest.mark.parametrize(
    "script, run, method",
    [
        ("inference/denoise_swiss_roll.py", "swiss", "smc"),
        ("inference/denoise_swiss_roll.py", "swiss", "perturbed"),
        ("inference/complete_heartbeat.py", "heartbeat", "smc"),
        ("inference/inpaint_digits.py", "digits", "smc"),
        ("inference/denoise_digits.py", "digits", "perturbed"),
    ],
)
def test_query_script_writes_its_report(runs, tmp_path, script, run, method, capsys):
    out = tmp_path / "q"
    argv = ["query", script, "--run", str(runs / run), "--out", str(out), "--method", method]
    assert main(argv + ["--num-data", "4", "--num-particles", "64", "--num-runs", "2", "--no-progress"]) == 0
    report = json.loads((out / "query.json").read_text())
    for key in ("sampler", "log_Z", "log_Z_stderr", "ess_min", "khat", "rhat_max", "seconds"):
        assert key in report
    assert report["sampler"] == method and len(report["log_Z"]) == 4
    assert np.all(np.isfinite(report["log_Z"])) and 0 < report["ess_min"] <= 64
    for name in ("posterior.nc", "posterior.png", "ess.png"):
        assert (out / name).stat().st_size > 0
    assert "log Z" in capsys.readouterr().out
    if run == "heartbeat":
        assert 0.0 <= report["score"]["valid_fraction"] <= 1.0
        x0 = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")["posterior"]["x0"].values
        assert x0.shape[:3] == (2, 64, 4) and np.all(x0[..., :10] == x0[:1, :1, :, :10])  # observed bins clamped
    if script.endswith("inpaint_digits.py"):
        x0 = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")["posterior"]["x0"].values
        assert np.all(x0[..., :4] == x0[:1, :1, ..., :4])  # the known left half is the same in every draw
        assert np.all(np.isfinite(list(report["score"].values())))
    if script.endswith("denoise_digits.py"):
        # SNR ≈ 1 in intensities: over 4 × 64 pixels the observation's RMSE is the noise sd × (1 ± 0.044)
        noise = report["score"]["noise_sd"]
        assert abs(report["score"]["rmse_observation"] / noise - 1.0) < 0.18
        # even a model that learned nothing (prior N(0, I) in its units) halves the noise variance: RMSE ≈ 0.71 sd
        assert report["score"]["rmse_posterior_mean"] < report["score"]["rmse_observation"]
    if script.endswith("denoise_swiss_roll.py"):  # data units: the roll's own, where it spans about ±13
        x0 = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")["posterior"]["x0"].values
        assert 4.0 < np.abs(x0).max() < 40.0
        # the noise is 1.7 in these units: the observations' mean distance to the truth is 1.7·√(π/2) ≈ 2.1
        assert 1.2 < report["score"]["distance_to_truth_observations"] < 3.2


def test_query_errors_are_one_line(runs, tmp_path, capsys):
    assert main(["query", "inference/nope.py", "--run", str(runs / "swiss")]) == 2
    assert "No query script" in capsys.readouterr().err
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    assert main(["query", str(empty), "--run", str(runs / "swiss")]) == 2
    assert "declares no `query" in capsys.readouterr().err
    assert main(["query", "inference/denoise_swiss_roll.py", "--run", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


TINY = ["--num-particles", "32", "--num-runs", "2", "--no-progress"]


def _raw_test(run, n):
    loaded = load_run(run)
    return loaded.split.standardiser.inverse(loaded.split.test[:n]).astype(np.float32)


@pytest.mark.parametrize("kind", ["npz", "csv"])
def test_own_observations_in_data_units(runs, tmp_path, kind, capsys):
    """--observations: noisy points in the roll's units from a file, the script's `observe` not called, no truth
    and so no score; the posterior is in the same units as the observations."""
    y = _raw_test(runs / "swiss", 3) + np.float32(0.5)
    path = tmp_path / f"obs.{kind}"
    if kind == "npz":
        np.savez(path, y=y)
    else:
        np.savetxt(path, y, delimiter=",", header="x,y", comments="")
    out = tmp_path / "q"
    argv = ["query", "inference/denoise_swiss_roll.py", "--run", str(runs / "swiss"), "--out", str(out)]
    assert main(argv + ["--observations", str(path)] + TINY) == 0
    report = json.loads((out / "query.json").read_text())
    assert len(report["log_Z"]) == 3 and "score" not in report and report["observations"] == str(path)
    tree = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")
    np.testing.assert_allclose(tree["observed_data"]["y"].values, y, rtol=1e-6)
    x0 = tree["posterior"]["x0"].values
    assert x0.shape == (2, 32, 3, 2) and np.abs(x0.mean((0, 1)) - y).max() < 3 * 1.7  # within a few noise sds
    for name in ("posterior.png", "ess.png"):
        assert (out / name).stat().st_size > 0


def test_impute_with_missing_cells_through_the_cli(runs, tmp_path, capsys):
    """inference/impute.py on a CSV with empty cells: the observed entries come back exactly (data units) and the
    missing ones get intervals, printed and in query.json."""
    y = _raw_test(runs / "swiss", 4)
    v = y.tolist()  # Python floats: their repr is the float32 value exactly
    rows = [f"{v[0][0]!r},", f",{v[1][1]!r}", f"{v[2][0]!r},nan", f"NA,{v[3][1]!r}"]
    path = tmp_path / "incomplete.csv"
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "q"
    argv = ["query", "inference/impute.py", "--run", str(runs / "swiss"), "--out", str(out)]
    assert main(argv + ["--observations", str(path)] + TINY) == 0
    report = json.loads((out / "query.json").read_text())
    intervals = report["answer"]["intervals"]
    assert intervals["row"] == [0, 1, 2, 3] and intervals["column"] == [1, 0, 1, 0]
    assert all(lo <= m <= hi for lo, m, hi in zip(intervals["lower"], intervals["median"], intervals["upper"]))
    x0 = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")["posterior"]["x0"].values
    known = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], bool)
    np.testing.assert_allclose(x0[:, :, known], np.broadcast_to(y[known], x0[:, :, known].shape), rtol=1e-5)
    for name in ("posterior.png", "intervals.png"):
        assert (out / name).stat().st_size > 0
    assert "intervals:" in capsys.readouterr().out


def test_observations_that_do_not_fit_fail_before_sampling(runs, tmp_path, capsys, monkeypatch):
    """A table of 3 columns for a run of 2, an .npz with a wrong name, a CSV for a query of two arguments: one-line
    errors naming the argument and the shapes, before the sampler runs and before anything is written."""

    def never(*args, **kwargs):
        raise AssertionError("the sampler ran")

    monkeypatch.setattr(dpm.SMC, "run", never)
    wide = tmp_path / "wide.csv"
    np.savetxt(wide, np.ones((10, 3)), delimiter=",")
    bad_name = tmp_path / "bad.npz"
    np.savez(bad_name, z=np.ones((2, 2)))
    cases = [
        ("inference/denoise_swiss_roll.py", wide, "observation `y` has rows of 3 values but the run models rows of 2"),
        ("inference/impute.py", wide, "observation `y` has rows of 3 values but the run models rows of 2 columns"),
        ("inference/denoise_swiss_roll.py", bad_name, r"holds arrays \['z'\] but the query model takes \['y'\]"),
        ("inference/inpaint_digits.py", wide, r"takes 2 observation arguments \['y', 'mask'\]"),
    ]
    for script, path, message in cases:
        out = tmp_path / "q"
        t0 = time.perf_counter()
        argv = ["query", script, "--run", str(runs / "swiss"), "--out", str(out), "--observations", str(path)]
        assert main(argv + TINY) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 2, err  # the error and the DPM_DEBUG hint
        assert __import__("re").search(message, err), err
        assert time.perf_counter() - t0 < 60 and not (out / "posterior.nc").exists()


PARTIAL = """
import numpyro
import numpyro.distributions as dist
import dpm_ppl as dpm
from dpm_ppl import Observed, QueryScript


def model(diffusion, y):  # observes the first column only: y has rows of 1 value
    x0 = diffusion.prior((y.shape[0],))
    numpyro.sample("y", dist.Normal(x0[:, :1], 1.0).to_event(1), obs=y)


def observe(run, key, num_data):
    raise AssertionError("not called with --observations")


def figures(run, observed, draws, out):
    raise RuntimeError("a broken figure")


query = QueryScript(name="partial", model=model, observe=observe, figures=figures)
"""


def test_a_query_of_part_of_a_row_survives_its_figures(runs, tmp_path, capsys):
    """The past crash: an observation `y` without the full row shape broke posterior.png after sampling. Now it is
    not drawn (a warning), a failing figure is reported in query.json, and the results are all written."""
    script = tmp_path / "partial.py"
    script.write_text(PARTIAL)
    path = tmp_path / "first.npz"
    np.savez(path, y=_raw_test(runs / "swiss", 3)[:, :1])
    out = tmp_path / "q"
    argv = ["query", str(script), "--run", str(runs / "swiss"), "--out", str(out), "--observations", str(path)]
    with pytest.warns(RuntimeWarning, match="a broken figure|not one value per coordinate"):
        assert main(argv + TINY) == 0
    report = json.loads((out / "query.json").read_text())
    assert any("a broken figure" in e for e in report["figure_errors"]) and len(report["log_Z"]) == 3
    for name in ("posterior.nc", "posterior.png", "ess.png"):
        assert (out / name).stat().st_size > 0
