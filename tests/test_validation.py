"""Every user mistake of issue 8 ends in a clear error, through the public API and through `dpm`.

One table: for each case, the exception and message the library raises (naming the argument, the
value received and the fix), and what the command prints: exit status 2 and a line
``dpm <command>: error: ...`` saying the same, with no traceback. Cases without a command-line form
(a β schedule is written in a script) are API-only; argparse refuses non-positive integers itself.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dpm_ppl import ArraySchedule, CheckpointError, HarmonicSchedule, TrainConfig, load_run
from dpm_ppl._schedules import validate_betas
from dpm_ppl.cli import main
from dpm_ppl.cli._experiment import load_script
from dpm_ppl.datasets import FileData, check_data
from dpm_ppl.infer import _checkpoint as checkpoint
from dpm_ppl.infer._train import BEST_CHECKPOINT as LOADED  # the state load_run reads


ROOT = Path(__file__).resolve().parents[1]
TABULAR = str(ROOT / "models" / "tabular.py")
BINARY = str(ROOT / "models" / "binary.py")
SWISS = str(ROOT / "models" / "swiss_roll.py")
TINY = ["--steps", "2", "--T", "2", "--num-samples", "20", "--no-progress"]


# -- files ---------------------------------------------------------------------------------------


def good_csv(path: Path) -> Path:
    x = np.random.default_rng(0).normal(size=(40, 2))
    np.savetxt(path, x, delimiter=",", header="u,v", comments="")
    return path


def csv_with(tmp: Path, text: str) -> Path:
    path = tmp / "data.csv"
    path.write_text(text)
    return path


def npy_with(tmp: Path, x: np.ndarray, name: str = "data.npy") -> Path:
    path = tmp / name
    np.save(path, x)
    return path


def with_nan(tmp):
    return csv_with(tmp, "a,b,c\n1,2,3\n4,5,6\n7,nan,9\n")


def with_inf(tmp):
    x = np.ones((5, 2))
    x[3, 0] = np.inf
    return npy_with(tmp, x)


def ragged(tmp):
    return csv_with(tmp, "a,b,c\n1,2,3\n4,5\n")


def non_numeric(tmp):
    return csv_with(tmp, "1,2,3\n4,x,6\n")


def header_only(tmp):
    return csv_with(tmp, "a,b,c\n")


def garbage_npy(tmp):
    path = tmp / "data.npy"
    path.write_bytes(b"this is not a numpy file")
    return path


def ambiguous_npz(tmp):
    path = tmp / "data.npz"
    np.savez(path, a=np.ones((4, 2)), b=np.zeros((4, 2)))
    return path


def text_file(tmp):
    path = tmp / "data.txt"
    path.write_text("1 2\n3 4\n")
    return path


def missing(tmp):
    return tmp / "nowhere.csv"


def real_valued(tmp):
    return good_csv(tmp / "real.csv")


def no_experiment(tmp):
    script = tmp / "empty.py"
    script.write_text('"""A script that forgot its experiment."""\nx = 1\n')
    return script


# -- run folders (a tiny models/tabular.py run, copied before each change) -----------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    data = good_csv(root / "table.csv")
    assert main(["fit", TABULAR, "--data", str(data), "--out", str(root / "run"), *TINY]) == 0
    return root / "run"


def run_copy(tmp: Path, trained: Path) -> Path:
    run = tmp / "run"
    shutil.copytree(trained, run)
    return run


def edit_run_json(run: Path, **changes) -> None:
    info = json.loads((run / "run.json").read_text())
    info.update(changes)
    (run / "run.json").write_text(json.dumps(info))


def other_T(tmp, trained):
    run = run_copy(tmp, trained)
    edit_run_json(run, num_steps=3)
    return run


def other_version(tmp, trained):
    run = run_copy(tmp, trained)
    line, _, payload = (run / LOADED).read_bytes().partition(b"\n")
    header = json.loads(line)
    header["library_version"] = "99.0.1-old"  # another major version
    (run / LOADED).write_bytes(json.dumps(header).encode() + b"\n" + payload)
    return run


def truncated(tmp, trained):
    run = run_copy(tmp, trained)
    raw = (run / LOADED).read_bytes()
    (run / LOADED).write_bytes(raw[: len(raw) // 2])
    return run


def flipped_byte(tmp, trained):
    run = run_copy(tmp, trained)
    raw = bytearray((run / LOADED).read_bytes())
    raw[-7] ^= 0x10
    (run / LOADED).write_bytes(bytes(raw))
    return run


def without_data_copy(run: Path) -> Path:
    """A run folder as written before folders kept a copy of the data file (only run.json's path to it)."""
    shutil.rmtree(run / "data")
    return run


def data_moved(tmp, trained):
    run = without_data_copy(run_copy(tmp, trained))
    edit_run_json(run, data=str(tmp / "moved_away.csv"))
    return run


def data_changed(tmp, trained):
    run = without_data_copy(run_copy(tmp, trained))
    info = json.loads((run / "run.json").read_text())
    changed = tmp / "table.csv"
    shutil.copy(info["data"], changed)
    with open(changed, "a") as f:
        f.write("0.5,0.5\n")
    edit_run_json(run, data=str(changed))
    return run


# -- the table -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """``api(tmp, run)`` returns a thunk that must raise ``exc`` matching ``match``; ``cli(tmp, run)`` returns
    the `dpm` arguments, whose error line must match ``cli_match`` (default: ``match``)."""

    name: str
    exc: type[Exception] | None
    match: str
    api: Callable | None = None
    cli: Callable | None = None
    cli_match: str | None = None
    needs_run: bool = False


def fit(script, data=None):
    return lambda tmp, run: [
        "fit",
        script,
        *(["--data", str(data(tmp))] if data else []),
        "--out",
        str(tmp / "o"),
        *TINY,
    ]


CASES = [
    # data
    Case("nan in data", ValueError, r"`data file '.*data\.csv'` contains a non-finite value nan at index \(2, 1\)",
         api=lambda tmp, run: FileData(with_nan(tmp)).array, cli=fit(TABULAR, with_nan)),
    Case("inf in data", ValueError, r"contains a non-finite value inf at index \(3, 0\) .*Remove or impute",
         api=lambda tmp, run: FileData(with_inf(tmp)).array, cli=fit(TABULAR, with_inf)),
    Case("ragged rows", ValueError, r"is ragged: line 3 has 2 values but line 2 has 3\. Give every example",
         api=lambda tmp, run: FileData(ragged(tmp)).array, cli=fit(TABULAR, ragged)),
    Case("non-numeric cell", ValueError, r"non-numeric value 'x' at line 2, column 2\. Fill or drop",
         api=lambda tmp, run: FileData(non_numeric(tmp)).array, cli=fit(TABULAR, non_numeric)),
    Case("1-D array", ValueError, r"must be an array of shape \(num_examples, \*event_shape\), got shape \(6,\)",
         api=lambda tmp, run: FileData(npy_with(tmp, np.ones(6))).array,
         cli=fit(TABULAR, lambda tmp: npy_with(tmp, np.ones(6)))),
    Case("examples of the wrong shape", ValueError, r"have shape \(2, 2\)\. Flatten them first",
         api=lambda tmp, run: lambda: load_script(TABULAR, npy_with(tmp, np.ones((6, 2, 2)))),
         cli=fit(TABULAR, lambda tmp: npy_with(tmp, np.ones((6, 2, 2))))),
    Case("event shape differs from the model", ValueError, r"has examples of shape \(3,\) but the model expects \(2,\)",
         api=lambda tmp, run: lambda: check_data(np.zeros((4, 3)), (2,))),
    Case("empty array", ValueError, r"is empty \(shape \(0, 3\)\): give at least one example",
         api=lambda tmp, run: FileData(npy_with(tmp, np.ones((0, 3)))).array,
         cli=fit(TABULAR, lambda tmp: npy_with(tmp, np.ones((0, 3))))),
    Case("header but no rows", ValueError, r"holds no data rows\. Give at least 3 examples",
         api=lambda tmp, run: FileData(header_only(tmp)).array, cli=fit(TABULAR, header_only)),
    Case("a single example", ValueError, r"holds 1 example; at least 3 are needed",
         api=lambda tmp, run: lambda: FileData(npy_with(tmp, np.ones((1, 3)))).raw(0),
         cli=fit(TABULAR, lambda tmp: npy_with(tmp, np.ones((1, 3))))),
    Case("non-binary data for a binomial model", ValueError,
         r"must be binary \(0 or 1\) for binomial diffusion, but has .* at index \(0, 0\).*Threshold or binarise",
         api=lambda tmp, run: lambda: load_script(BINARY, real_valued(tmp)), cli=fit(BINARY, real_valued)),
    # settings
    Case("T < 1", ValueError, r"`num_steps` \(T\) must be an integer ≥ 1, got 0",
         api=lambda tmp, run: lambda: HarmonicSchedule(0),
         cli=lambda tmp, run: ["fit", SWISS, "--T", "0"], cli_match=r"argument --T: must be a positive integer, got 0"),
    Case("β outside (0, 1)", ValueError, r"`betas` must lie strictly inside \(0, 1\); β_2 = 1\.5 does not",
         api=lambda tmp, run: lambda: ArraySchedule([0.1, 1.5])),
    Case("β of the wrong length", ValueError, r"`betas` has length 3 but the diffusion has T = 4 steps",
         api=lambda tmp, run: lambda: validate_betas(np.full(3, 0.1), num_steps=4)),
    Case("non-positive batch size", ValueError, r"`batch_size` must be a positive integer, got 0",
         api=lambda tmp, run: lambda: TrainConfig(batch_size=0),
         cli=lambda tmp, run: ["fit", SWISS, "--batch-size", "0"],
         cli_match=r"argument --batch-size: must be a positive integer, got 0"),
    Case("non-positive steps", ValueError, r"`steps` must be a positive integer, got -3",
         api=lambda tmp, run: lambda: TrainConfig(steps=-3),
         cli=lambda tmp, run: ["fit", SWISS, "--steps", "-3"],
         cli_match=r"argument --steps: must be a positive integer, got -3"),
    # scripts
    Case("unknown model script", FileNotFoundError, r"No model script at '.*nope\.py'\. The scripts shipped are in",
         api=lambda tmp, run: lambda: load_script(tmp / "nope.py"), cli=lambda tmp, run: ["fit", str(tmp / "nope.py")]),
    Case("script declaring nothing", ValueError, r"declares no `experiment = dpm_ppl\.Experiment\(\.\.\.\)`",
         api=lambda tmp, run: lambda: load_script(no_experiment(tmp)),
         cli=lambda tmp, run: ["fit", str(no_experiment(tmp))]),
    Case("--data for a script with its own data", ValueError,
         r"brings its own data \(SwissRoll\) and takes no `--data`",
         api=lambda tmp, run: lambda: load_script(SWISS, good_csv(tmp / "d.csv")),
         cli=fit(SWISS, lambda tmp: good_csv(tmp / "d.csv"))),
    Case("no --data for a script that needs it", ValueError, r"trains on your own data: give `--data FILE`",
         api=lambda tmp, run: lambda: load_script(TABULAR), cli=fit(TABULAR)),
    # data files
    Case("missing data file", FileNotFoundError, r"No data file at '.*nowhere\.csv'\. Give the path of a \.npy",
         api=lambda tmp, run: FileData(missing(tmp)).array, cli=fit(TABULAR, missing)),
    Case("unreadable data file", ValueError,
         r"Cannot read the data file '.*data\.npy' as \.npy: .*Save it with np\.save",
         api=lambda tmp, run: FileData(garbage_npy(tmp)).array, cli=fit(TABULAR, garbage_npy)),
    Case("unsupported data format", ValueError, r"must be a \.npy, \.npz or \.csv file, got '.*data\.txt'",
         api=lambda tmp, run: lambda: FileData(text_file(tmp)), cli=fit(TABULAR, text_file)),
    Case("several arrays in an .npz", ValueError, r"holds 2 arrays \['a', 'b'\]; save one array, or name the data `x`",
         api=lambda tmp, run: FileData(ambiguous_npz(tmp)).array, cli=fit(TABULAR, ambiguous_npz)),
    # checkpoints and run folders
    Case("checkpoint of another model spec", CheckpointError,
         r"holds a different model: spec field 'num_steps' is 2 there but 3 here",
         api=lambda tmp, run: lambda: load_run(other_T(tmp, run)),
         cli=lambda tmp, run: ["sample", str(other_T(tmp, run)), "--out", str(tmp / "s")], needs_run=True),
    Case("checkpoint of another major version", CheckpointError, r"written by dpm_ppl 99\.0\.1-old, this is .*retrain",
         api=lambda tmp, run: lambda: load_run(other_version(tmp, run)),
         cli=lambda tmp, run: ["sample", str(other_version(tmp, run))], needs_run=True),
    Case("truncated checkpoint", CheckpointError, r"best\.eqx' is truncated or corrupted .*\.prev",
         api=lambda tmp, run: lambda: load_run(truncated(tmp, run)),
         cli=lambda tmp, run: ["evaluate", str(truncated(tmp, run)), "--no-progress"], needs_run=True),
    Case("corrupted checkpoint", CheckpointError, r"is truncated or corrupted \(its content hash does not match\)",
         api=lambda tmp, run: lambda: load_run(flipped_byte(tmp, run)),
         cli=lambda tmp, run: ["sample", str(flipped_byte(tmp, run))], needs_run=True),
    Case("data file moved after training", FileNotFoundError,
         r"The data file '.*moved_away\.csv' that '.*run' was trained on is gone \(moved or deleted\), and the run "
         r"folder holds no copy\. Put it back",
         api=lambda tmp, run: lambda: load_run(data_moved(tmp, run)),
         cli=lambda tmp, run: ["sample", str(data_moved(tmp, run))], needs_run=True),
    Case("data file changed after training", CheckpointError,
         r"The data file '.*table\.csv' changed since '.*run' was trained on it",
         api=lambda tmp, run: lambda: load_run(data_changed(tmp, run)),
         cli=lambda tmp, run: ["sample", str(data_changed(tmp, run))], needs_run=True),
]  # fmt: skip
IDS = [c.name for c in CASES]


def _run_for(case: Case, request) -> Path | None:
    return request.getfixturevalue("trained") if case.needs_run else None


@pytest.mark.parametrize("case", [c for c in CASES if c.api], ids=[c.name for c in CASES if c.api])
def test_public_api(case, tmp_path, request):
    """The library raises a specific exception whose message names the argument, the value and the fix."""
    thunk = case.api(tmp_path, _run_for(case, request))
    with pytest.raises(case.exc, match=case.match):
        thunk()


@pytest.mark.parametrize("case", [c for c in CASES if c.cli], ids=[c.name for c in CASES if c.cli])
def test_command_line(case, tmp_path, request, capsys):
    """`dpm` exits with status 2 and one line `dpm <command>: error: <the same message>`, no traceback."""
    argv = case.cli(tmp_path, _run_for(case, request))
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"dpm {argv[0]}: error: ")]
    assert len(lines) == 1, err
    assert re.search(case.cli_match or case.match, lines[0]), lines[0]


def test_resume_with_other_settings_is_refused(trained, tmp_path, capsys):
    """`dpm fit --resume` with another T than the checkpoint's names the differing spec field."""
    run = run_copy(tmp_path, trained)
    data = json.loads((run / "run.json").read_text())["data"]
    argv = ["fit", TABULAR, "--data", data, "--out", str(run), "--resume", "--steps", "2", "--T", "3", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "continues only the same run" in err and "num_steps" in err


def test_every_case_is_covered():
    """Each item of the issue's list has a row (a guard against the table losing one)."""
    required = {
        "nan in data", "inf in data", "ragged rows", "1-D array", "empty array", "non-binary data for a binomial model",
        "T < 1", "β outside (0, 1)", "β of the wrong length", "non-positive batch size", "non-positive steps",
        "unknown model script", "script declaring nothing", "missing data file", "unreadable data file",
        "checkpoint of another model spec", "checkpoint of another major version", "truncated checkpoint",
        "corrupted checkpoint",
    }  # fmt: skip
    assert required <= set(IDS)
    assert checkpoint.CheckpointError is CheckpointError
