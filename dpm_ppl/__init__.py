"""dpm_ppl: diffusion probabilistic models (Sohl-Dickstein et al., ICML 2015) as NumPyro programs.

The public names are listed once, in ``__init__.pyi``, and each is imported on first use (PEP 562): the
package itself imports nothing, so ``dpm --help`` starts without JAX and a query on a model in memory never
loads the training or run-folder stack.
"""

import ast as _ast
import importlib as _importlib
from pathlib import Path as _Path


def _exports() -> dict[str, tuple[str, str | None]]:
    """Public name → (module relative to this package, attribute or None for the module itself)."""
    table: dict[str, tuple[str, str | None]] = {}
    for node in _ast.parse(_Path(__file__).with_suffix(".pyi").read_text()).body:
        if isinstance(node, _ast.ImportFrom):
            for alias in node.names:
                if node.module is None:
                    table[alias.asname or alias.name] = ("." + alias.name, None)
                else:
                    table[alias.asname or alias.name] = ("." + node.module, alias.name)
    return table


_EXPORTS = _exports()
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dpm_ppl' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = _importlib.import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
