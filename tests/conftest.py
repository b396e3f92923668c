"""Test configuration: CPU only, float32 by default, fixed keys everywhere.

The environment variables must be set before JAX is imported anywhere, so they sit at the top of
this file, which pytest imports before any test module.
"""

import os


os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.pop("JAX_ENABLE_X64", None)  # float32 tests: tolerances below are derived for float32

import jax  # noqa: E402
import pytest  # noqa: E402


jax.config.update("jax_enable_x64", False)
jax.config.update("jax_platforms", "cpu")


@pytest.fixture
def key():
    """A fixed PRNG key; tests that need several split it."""
    return jax.random.key(0)
