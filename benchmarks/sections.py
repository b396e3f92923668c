"""Marked sections of RESULTS.md: each benchmark with its own command rewrites only its own section.

A section is the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``; the main benchmark
(`python -m benchmarks`) rewrites the rest of the file and keeps every section as it was.
"""

from __future__ import annotations


NAMES = ("imports", "posterior", "tabular")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def splice(text: str, section: str, name: str) -> str:
    """``text`` with its section ``name`` replaced by ``section`` (appended if absent)."""
    begin, end = markers(name)
    i, j = text.find(begin), text.find(end)
    if i >= 0 and j > i:
        return text[:i] + section + text[j + len(end) :]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def existing_section(text: str, name: str) -> str | None:
    """The section ``name`` of ``text`` with its markers, or None."""
    begin, end = markers(name)
    i, j = text.find(begin), text.find(end)
    return text[i : j + len(end)] if i >= 0 and j > i else None


def keep_sections(text: str, old: str) -> str:
    """``text`` with every section of ``old`` spliced back in."""
    for name in NAMES:
        kept = existing_section(old, name)
        if kept is not None:
            text = splice(text, kept, name)
    return text
