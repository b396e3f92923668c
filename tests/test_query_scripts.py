"""`dpm query`: the shipped query scripts end to end on briefly trained runs, and the script errors."""

import json

import numpy as np
import pytest

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
        import xarray as xr

        x0 = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")["posterior"]["x0"].values
        assert x0.shape[:3] == (2, 64, 4) and np.all(x0[..., :10] == x0[:1, :1, :, :10])  # observed bins clamped
    if script.endswith("inpaint_digits.py"):
        import xarray as xr

        x0 = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")["posterior"]["x0"].values
        assert np.all(x0[..., :4] == x0[:1, :1, ..., :4])  # the known left half is the same in every draw
        assert np.all(np.isfinite(list(report["score"].values())))
    if script.endswith("denoise_digits.py"):
        # SNR = 1: the noise has unit variance, so over 4 × 64 pixels the observation's RMSE is 1 ± 0.044
        assert abs(report["score"]["rmse_observation"] - 1.0) < 0.18
        # even a model that learned nothing (prior N(0, I)) halves the noise variance: RMSE ≈ 0.71
        assert report["score"]["rmse_posterior_mean"] < report["score"]["rmse_observation"]


def test_query_errors_are_one_line(runs, tmp_path, capsys):
    assert main(["query", "inference/nope.py", "--run", str(runs / "swiss")]) == 2
    assert "No query script" in capsys.readouterr().err
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    assert main(["query", str(empty), "--run", str(runs / "swiss")]) == 2
    assert "declares no `query" in capsys.readouterr().err
    assert main(["query", "inference/denoise_swiss_roll.py", "--run", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
