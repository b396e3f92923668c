"""The anchors' static checks, run by the suite so that `.ci/run` and the README's test command run them too:
ruff (lint and format) on every Python file of the project, and basedpyright (pyright's standard mode, configured in
pyproject.toml) clean on `dpm_ppl/`."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["dpm_ppl", "tests", "benchmarks", "models", "inference"]


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"{name} is not installed in this environment: run the tests through `.ci/env pytest`.")
    return path


def _run(*command: str) -> None:
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"{' '.join(command)} failed:\n{out.stdout[-6000:]}{out.stderr[-2000:]}"


def test_ruff_lint():
    _run(_tool("ruff"), "check", *SOURCES)


def test_ruff_format():
    _run(_tool("ruff"), "format", "--check", *SOURCES)


def test_pyright_clean_on_the_package():
    _run(_tool("basedpyright"), "--project", str(ROOT))
