"""Timing helpers: interleaved repeats, paired ratios, compile time, compiled memory.

Absolute times on these shared machines drift by tens of percent within minutes, so every
comparison is made of interleaved repeats (A, B, C, then C, B, A, …) in one run, and a ratio is
the median of the per-repeat ratios A_r / B_r: drift that spans one repeat cancels.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def stats(values: list[float]) -> dict[str, float]:
    """Median, min and max of a list of numbers (and how many)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def seconds(fn: Callable[..., Any], *args) -> Callable[[], float]:
    """A callable that runs ``fn(*args)`` to completion (``block_until_ready``) and returns the seconds it took."""

    def run() -> float:
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        return time.perf_counter() - start

    return run


def interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Each callable once per repeat, in alternating order (ABC, CBA, …); returns every time by name."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(runs[name]())
    return times


def paired_ratio(a: list[float], b: list[float]) -> dict[str, float]:
    """Stats of the per-repeat ratios a_r / b_r."""
    return stats([x / y for x, y in zip(a, b)])


def compile_time(make: Callable[[], Callable[[], float]], steady: float) -> float:
    """Seconds of the first call of a freshly made function minus a steady call: trace, lower and compile.

    ``make`` returns a timed first call (`seconds`); JAX's caches are cleared first, so nothing
    compiled earlier (e.g. the same shapes in another benchmark) is reused.
    """
    jax.clear_caches()
    return max(make()() - steady, 0.0)


def memory(jitted, *args) -> dict[str, float]:
    """XLA's compiled memory for ``jitted(*args)`` in MiB: temporaries, arguments, outputs."""
    analysis = jitted.lower(*args).compile().memory_analysis()
    mib = 2.0**20
    return {
        "temp_mib": analysis.temp_size_in_bytes / mib,
        "argument_mib": analysis.argument_size_in_bytes / mib,
        "output_mib": analysis.output_size_in_bytes / mib,
    }
