"""Model and query scripts are Python files named by path: importing one, written once."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


__all__ = ["import_script"]


def import_script(path: Path, kind: str, shipped: str) -> ModuleType:
    """Import the ``kind`` script (``"model"``, ``"query"``) at ``path`` as module ``_dpm_<kind>_<stem>``.

    Raises `FileNotFoundError` naming where the shipped scripts are (``shipped``, e.g. ``models/swiss_roll.py``)
    when there is no file, and `ValueError` when it is not a Python file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"No {kind} script at {str(path)!r}. The scripts shipped are in {shipped}.")
    spec = importlib.util.spec_from_file_location(f"_dpm_{kind}_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{str(path)!r} is not a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
