"""Test configuration: CPU only, float32 by default, fixed keys everywhere.

The environment variables must be set before JAX is imported anywhere, so they sit at the top of
this file, which pytest imports before any test module.
"""

import atexit
import os
import shutil
import tempfile


os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.pop("JAX_ENABLE_X64", None)  # float32 tests: tolerances below are derived for float32
# `dpm` commands run by tests share one throw-away compilation cache, not the user's: a new folder per test run, so
# no run reads executables another run (another checkout, another environment) wrote, and none is left behind
_CACHE = tempfile.mkdtemp(prefix="dpm_ppl-test-xla-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE

import jax  # noqa: E402
import pytest  # noqa: E402


jax.config.update("jax_enable_x64", False)
jax.config.update("jax_platforms", "cpu")
# the test process itself compiles without the persistent cache (the `dpm` subprocesses above use it): writing and
# reading back the executables of the whole suite in one process crashed XLA twice (SIGSEGV / SIGABRT in
# `compilation_cache.get/put_executable_and_time`, always at the Jacobian-twist SMC test)
jax.config.update("jax_enable_compilation_cache", False)


def pytest_configure(config):
    """Warnings are errors (pyproject.toml), but for the ones dpm_ppl gives on purpose: tiny test settings trip its
    diagnostics, and the tests that check a warning catch it with `pytest.warns`."""
    for category in ("DiagnosticWarning", "DataWarning"):
        config.addinivalue_line("filterwarnings", f"default::dpm_ppl.{category}")


@pytest.fixture
def key():
    """A fixed PRNG key; tests that need several split it."""
    return jax.random.key(0)
