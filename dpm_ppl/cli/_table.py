"""The commands' plain-text tables, written once: columns padded to their widest cell."""

from __future__ import annotations

from collections.abc import Sequence


__all__ = ["print_table"]


def print_table(rows: Sequence[Sequence[str]], indent: str = "  ", align: str = "left") -> None:
    """Print ``rows`` (lists of cells, the same length) with each column as wide as its widest cell, cells two
    spaces apart, left- or right-aligned."""
    if not rows:
        return
    width = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    pad = str.ljust if align == "left" else str.rjust
    for r in rows:
        print(indent + "  ".join(pad(c, w) for c, w in zip(r, width)))
