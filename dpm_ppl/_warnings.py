"""The warnings dpm_ppl gives on purpose, as categories a user (or a test suite run with warnings as errors) can
filter by name."""

from __future__ import annotations


__all__ = ["DataWarning", "DiagnosticWarning"]


class DiagnosticWarning(RuntimeWarning):
    """A diagnostic flags a result as unreliable: PSIS k̂ > 0.7, R-hat across runs or chains above its bound, a
    run-level Ẑ dominated by one run, too few effective particles, or a number left undefined (a standard error
    over one datum). The result is still returned, with the diagnostic beside it."""


class DataWarning(UserWarning):
    """Data that will train poorly: few rows for their columns, or near-constant columns."""
