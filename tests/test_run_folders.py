"""Run folders never lose work: another run is never overwritten silently, stale outputs go, Ctrl-C and
SIGTERM leave a checkpoint and the command that resumes it, and a folder is self-contained (the model
script and the data file are copied in, so `dpm sample` and `dpm evaluate` need neither original)."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dpm_ppl.cli import main


ROOT = Path(__file__).resolve().parents[1]
TABULAR = ROOT / "models" / "tabular.py"
TINY = ["--steps", "30", "--T", "4", "--num-samples", "50", "--no-progress"]
STEPS = 20_000  # long enough that the signal arrives during training


def _csv(path: Path, rows: int = 120, seed: int = 0) -> Path:
    x = np.random.default_rng(seed).multivariate_normal([1.0, -2.0, 30.0], [[1, 0.6, 0], [0.6, 1, 0], [0, 0, 90]], rows)
    np.savetxt(path, x, delimiter=",", header="a,b,c", comments="")
    return path


def _strict_json(path: Path) -> dict:
    """json.loads that refuses NaN and Infinity (they are not JSON)."""

    def refuse(name):
        raise ValueError(f"{path.name} holds {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _csv(tmp_path_factory.mktemp("data") / "table.csv")


def _fit(data: Path, out: Path, *extra: str) -> int:
    return main(["fit", str(TABULAR), "--data", str(data), "--out", str(out), *TINY, *extra])


def test_another_run_is_refused_and_force_clears_stale_outputs(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _fit(data, out) == 0
    assert (out / "best.eqx").exists() and (out / "script.py").exists() and (out / "data" / "table.csv").exists()
    results = _strict_json(out / "results.json")
    assert results["best_step"] <= results["steps"] and "gaussian" in results["baselines"]
    (out / "evaluation.json").write_text("{}")  # a stale output of an earlier `dpm evaluate`
    capsys.readouterr()
    assert _fit(data, out, "--seed", "1") == 2
    err = capsys.readouterr().err
    assert "holds a different run" in err and "seed" in err and "--force" in err
    assert (out / "evaluation.json").exists()  # nothing was touched
    assert _fit(data, out, "--seed", "1", "--force") == 0
    assert not (out / "evaluation.json").exists()
    assert json.loads((out / "run.json").read_text())["seed"] == 1


def test_resume_continues_only_the_same_run(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _fit(data, out) == 0
    capsys.readouterr()
    assert _fit(data, out, "--resume", "--seed", "3") == 2
    assert "continues only the same run" in capsys.readouterr().err
    other = _csv(tmp_path / "other.csv", seed=5)
    assert _fit(other, out, "--resume") == 2
    assert "data_sha256" in capsys.readouterr().err


def test_other_files_are_kept_and_orphan_outputs_refused(data, tmp_path, capsys):
    """The user's own files in the folder are never touched; a run's outputs without run.json are refused."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert _fit(data, out) == 0
    assert (out / "notes.txt").read_text() == "my notes" and (out / "results.json").exists()
    (out / "run.json").unlink()
    capsys.readouterr()
    assert _fit(data, out) == 2
    assert "holds outputs of a run" in capsys.readouterr().err
    assert _fit(data, out, "--force") == 0
    assert (out / "notes.txt").read_text() == "my notes"


def test_folder_is_self_contained(tmp_path):
    """With the data file and the script's original gone, `dpm sample` and `dpm evaluate --split val` still work
    from the run folder, and each command writes its own files."""
    data = _csv(tmp_path / "gone.csv")
    out = tmp_path / "run"
    assert _fit(data, out) == 0
    data.unlink()
    fit_png = (out / "samples.png").read_bytes()
    assert main(["sample", str(out), "--num-samples", "40"]) == 0
    assert (out / "sample" / "samples.npz").exists() and (out / "sample" / "pairs.png").exists()
    assert (out / "samples.png").read_bytes() == fit_png  # the fit's figure is not overwritten
    args = ["evaluate", str(out), "--split", "val", "--num-trajectories", "30", "--no-progress"]
    assert main(args) == 0
    evaluation = _strict_json(out / "evaluation_val.json")
    assert evaluation["split"] == "val" and not (out / "evaluation.json").exists()
    assert "loglik_is_minus_bits" in evaluation["baselines"]["gmm"]


def test_folder_moves_and_an_edited_script_copy_is_refused(data, tmp_path, capsys):
    """A run folder moved elsewhere still loads (from its own copy of the script); once that copy is edited, loading
    refuses it, naming the file and the hash, instead of silently rebuilding another model."""
    out = tmp_path / "run"
    assert _fit(data, out) == 0
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    os.rename(out, moved)
    assert main(["sample", str(moved), "--num-samples", "20"]) == 0
    script = moved / "script.py"
    script.write_text(script.read_text() + "\n# edited after training\n")
    capsys.readouterr()
    assert main(["sample", str(moved), "--num-samples", "20"]) == 2
    err = capsys.readouterr().err
    assert "script.py" in err and "SHA-256" in err and "edited" in err


def test_no_nan_in_json_of_a_tiny_table(tmp_path):
    """A 6-row file trains (with a warning) and every JSON it writes is strict (undefined numbers as null)."""
    data = _csv(tmp_path / "tiny.csv", rows=6)
    out = tmp_path / "run"
    with pytest.warns(UserWarning):
        assert _fit(data, out) == 0
    _strict_json(out / "results.json")
    assert main(["evaluate", str(out), "--num-trajectories", "30", "--no-progress"]) == 0
    _strict_json(out / "evaluation.json")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_writes_a_checkpoint_and_says_how_to_resume(tmp_path, sig):
    """A real SIGINT / SIGTERM to `dpm fit`: exit 130, one line per message (no traceback), a checkpoint at the
    current step, and the printed command resumes it to the end."""
    data = _csv(tmp_path / "t.csv")
    out = tmp_path / "run"
    args = ["fit", str(TABULAR), "--data", str(data), "--out", str(out), "--steps", str(STEPS), "--T", "4"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(  # as from a terminal: a shell's background job would start with SIGINT ignored
        [sys.executable, "-m", "dpm_ppl.cli", *args, "--no-progress"], env=env, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.eqx").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the first evaluation's checkpoint: training has begun
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted by" in err and "resume with:" in err
    line = next(x for x in err.splitlines() if x.startswith("resume with:"))
    command = shlex.split(line.removeprefix("resume with:").strip())
    assert command[:2] == ["dpm", "fit"] and "--resume" in command
    header = json.loads((out / "checkpoint.eqx").read_bytes().partition(b"\n")[0])
    assert 0 < int(header["meta"]["step"]) < STEPS
    assert main([*command[1:], "--no-progress"]) == 0  # the printed command, as a user would paste it
    assert _strict_json(out / "results.json")["steps"] == STEPS
