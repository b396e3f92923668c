"""The library's version, defined once (pyproject.toml reads it from here)."""

__version__ = "0.3.0"
