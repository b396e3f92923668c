"""Test configuration: CPU only, float32 by default, fixed keys everywhere.

The environment variables must be set before JAX is imported anywhere, so they sit at the top of
this file, which pytest imports before any test module.
"""

import os
import tempfile


os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.pop("JAX_ENABLE_X64", None)  # float32 tests: tolerances below are derived for float32
# `dpm` commands run by tests share one throw-away compilation cache, not the user's
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"dpm_ppl-test-xla-{os.getuid()}")

import jax  # noqa: E402
import pytest  # noqa: E402


jax.config.update("jax_enable_x64", False)
jax.config.update("jax_platforms", "cpu")


def pytest_configure(config):
    """Warnings are errors (pyproject.toml), but for the ones dpm_ppl gives on purpose: tiny test settings trip its
    diagnostics, and the tests that check a warning catch it with `pytest.warns`."""
    for category in ("DiagnosticWarning", "DataWarning"):
        config.addinivalue_line("filterwarnings", f"default::dpm_ppl.{category}")


@pytest.fixture
def key():
    """A fixed PRNG key; tests that need several split it."""
    return jax.random.key(0)
