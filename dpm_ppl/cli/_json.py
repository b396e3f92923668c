"""What the commands write: strict JSON, atomically.

A JSON record never holds ``NaN`` or ``Infinity`` (they are not JSON): an undefined number, such as
a standard error over one datum or PSIS k̂ with too few weights, is written as ``null`` and named in
a warning. Files are written to a temporary name and moved into place, so a crash or Ctrl-C leaves
the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._warnings import DiagnosticWarning


__all__ = ["write_json"]


def _strict(obj: Any, where: str, undefined: list[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _strict(v, f"{where}.{k}" if where else str(k), undefined) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v, f"{where}[{i}]", undefined) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _strict(obj.tolist(), where, undefined)
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (float, np.floating)):
        if not math.isfinite(obj):
            undefined.append(where)
            return None
        return float(obj)
    return obj


def write_json(path: str | Path, obj: dict, *, quiet: tuple[str, ...] = ()) -> None:
    """Write ``obj`` to ``path`` as strict JSON, atomically; non-finite numbers become ``null``.

    **Arguments:**

    - `path`: the file.
    - `obj`: a dict of numbers, strings, lists, dicts and NumPy values.
    - `quiet`: keys whose ``null`` is expected (e.g. k̂ undefined for few weights) and not warned about.
    """
    path = Path(path)
    undefined: list[str] = []
    strict = _strict(obj, "", undefined)
    loud = [k for k in undefined if k.split(".")[0].split("[")[0] not in quiet]
    if loud:
        warnings.warn(
            f"{path.name}: {', '.join(loud)} undefined (not finite), written as null. A standard error needs at "
            "least two data; a NaN loss or estimate means the run needs a look.",
            DiagnosticWarning,
            stacklevel=2,
        )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(strict, indent=2) + "\n")
    os.replace(tmp, path)
