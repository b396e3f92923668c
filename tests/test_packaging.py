"""The package as a user installs and imports it: one version, a lock that pins every dependency, a public API whose
every name resolves, and start-up that loads nothing heavy (timings live in `benchmarks/imports.py`)."""

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import dpm_ppl


ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_version_is_single_sourced():
    assert dpm_ppl.__version__ == importlib.metadata.version("dpm_ppl")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]


def test_lock_pins_every_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    lines = [l for l in (ROOT / "requirements.lock").read_text().splitlines() if l and not l.startswith("#")]
    pinned = {}
    for line in lines:
        name, sep, pin = line.partition("==")
        assert sep, f"requirements.lock: {line!r} is not pinned with =="
        pinned[_name(name)] = pin
    assert wanted <= set(pinned), f"not in requirements.lock: {sorted(wanted - set(pinned))}"
    for name in ("jax", "numpyro", "equinox"):
        assert importlib.metadata.version(name) == pinned[name], f"{name} installed is not the locked version"


@pytest.mark.parametrize("name", dpm_ppl.__all__)
def test_every_public_name_resolves(name):
    assert getattr(dpm_ppl, name) is not None


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'posterior_of'"):
        dpm_ppl.posterior_of  # noqa: B018


def _loaded_after(code: list[str]) -> set[str]:
    probe = "import sys, runpy; sys.argv = {argv!r}; {run}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe.format(argv=["dpm", *code[1:]], run=code[0])],
        capture_output=True,
        text=True,
        check=False,
    )
    return set(out.stdout.split())


def test_import_and_help_load_no_jax():
    """`import dpm_ppl` and `dpm --help` import neither JAX nor matplotlib nor ArviZ."""
    heavy = {"jax", "matplotlib", "arviz_stats", "xarray", "numpyro", "equinox"}
    assert not heavy & _loaded_after(["import dpm_ppl"])
    help_run = "import contextlib, io\nfrom dpm_ppl.cli import main\ntry:\n    main()\nexcept SystemExit: pass"
    modules = _loaded_after([f"exec({help_run!r})", "--help"])
    assert "dpm_ppl.cli._main" in modules and not heavy & modules, heavy & modules
