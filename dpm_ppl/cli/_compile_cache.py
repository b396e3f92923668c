"""JAX's persistent compilation cache, so a second `dpm` command skips recompiling the same programs.

Compiling the chain, the bound's gradient and the sampler is a fixed cost of every command (seconds
on the Swiss roll, tens of seconds for the image network). With the cache on, XLA executables are
stored on disk keyed by the program, the JAX version and the device, and reloaded by later processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


__all__ = ["default_dir", "enable"]


def default_dir() -> Path:
    """``$JAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/dpm_ppl/jax`` (``~/.cache/dpm_ppl/jax``)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dpm_ppl" / "jax"


def enable(path: str | os.PathLike | None = None, *, min_compile_seconds: float = 0.0) -> Path:
    """Turn the persistent cache on at ``path`` (default `default_dir`); cache programs that took at least
    ``min_compile_seconds`` to compile. Returns the folder."""
    path = Path(path) if path is not None else default_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            f"Cannot create the compilation cache folder {str(path)!r} ({err.strerror}); pass `--compile-cache DIR` "
            "with a writable folder, or `--compile-cache off`."
        ) from err
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
