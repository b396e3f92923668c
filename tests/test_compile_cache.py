"""The persistent compilation cache: where it lives, that a process fills it, and clear errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpm_ppl.cli import _compile_cache as compile_cache
from dpm_ppl.cli import main


def test_default_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jaxcache"))
    assert compile_cache.default_dir() == tmp_path / "jaxcache"
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_dir() == tmp_path / "xdg" / "dpm_ppl" / "jax"


def test_a_process_fills_the_cache_and_a_second_reads_it(tmp_path):
    """The second process compiles nothing: every program comes from the cache."""
    code = (
        "import sys, jax, jax.numpy as jnp\n"
        "from dpm_ppl.cli import _compile_cache as compile_cache\n"
        "compile_cache.enable(sys.argv[1])\n"
        "from jax._src import monitoring\n"
        "hits = []\n"
        "monitoring.register_event_listener(lambda e, **kw: hits.append(e) if 'cache_hits' in e else None)\n"
        "print(float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).sum()), len(hits))\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    outs = [
        subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert any(Path(tmp_path).iterdir())
    (value1, hits1), (value2, hits2) = (out.stdout.split() for out in outs)
    assert value1 == value2 and int(hits1) == 0 and int(hits2) >= 1


def test_unwritable_cache_folder_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="Cannot create the compilation cache folder.*--compile-cache off"):
        compile_cache.enable(blocker / "sub")
    assert main(["--compile-cache", str(blocker / "sub"), "sample", str(tmp_path)]) == 2
    assert "--compile-cache" in capsys.readouterr().err


def test_unwritable_default_folder_only_warns(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert main(["sample", str(tmp_path)]) == 2  # fails for its own reason: not a run folder
    err = capsys.readouterr().err
    assert "warning: Cannot create the compilation cache folder" in err and "not a run folder" in err
