"""The layer rule, read from the import graph: core ← {nn, datasets, infer} ← {arviz, plots} ← cli.

Every import in `dpm_ppl/` counts, including the deferred ones inside functions. The package's own
``__init__`` is the curated public API and may name anything; no other module imports the cli, and no
library module imports a layer above its own.
"""

import ast
from pathlib import Path

import pytest


PACKAGE = Path(__file__).resolve().parents[1] / "dpm_ppl"

#: which groups each group may import (besides itself)
ALLOWED = {
    "core": set(),
    "nn": {"core"},
    "datasets": {"core"},
    "infer": {"core"},
    "arviz": {"core", "infer"},
    "plots": {"core", "infer", "arviz"},
    "cli": {"core", "nn", "datasets", "infer", "arviz", "plots"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _group(module: str) -> str | None:
    """The layer group of a dpm_ppl module: its first sub-package, ``core`` for the private top-level modules, and
    None for the package itself (the public API)."""
    parts = module.split(".")
    if parts[0] != "dpm_ppl":
        return None
    if len(parts) == 1:
        return None
    head = parts[1]
    if head.startswith("_"):
        return "core"
    return head


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every dpm_ppl import in ``path``; ``from X import name`` counts X.name too when
    name is a module (a sub-module import)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "dpm_ppl"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "dpm_ppl":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    PACKAGE.parent / Path(*sub.split(".")) / "__init__.py"
                ).exists()
                found.append((node.lineno, sub if is_module else target))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_group():
    groups = {_group(_module_name(p)) for p in MODULES} - {None}
    assert groups == set(ALLOWED), f"unknown layer groups: {groups - set(ALLOWED)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(path):
    own = _group(_module_name(path))
    if own is None:  # dpm_ppl/__init__.py: the curated API
        return
    bad = []
    for line, target in _imports(path):
        other = _group(target)
        if other is None:
            bad.append(f"line {line}: imports the package's public API `{target}` (import the defining module)")
        elif other != own and other not in ALLOWED[own]:
            bad.append(f"line {line}: {own} imports {other} (`{target}`)")
    assert not bad, f"{path.relative_to(PACKAGE)} breaks the layer rule:\n" + "\n".join(bad)
