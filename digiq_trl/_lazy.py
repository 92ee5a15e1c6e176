"""Lazy re-exports for package ``__init__`` modules (PEP 562), like ``transformers``' lazy module.

A package lists which of its submodules defines each public name; the submodule is imported the
first time the name is read, so ``import digiq_trl`` (and every ``digiq-trl --help``) does not pay
for torch and transformers. A resolved name is cached in the package, so later reads are plain
attribute lookups.

Example (in a package's ``__init__.py``)::

    _EXPORTS = {".actions": ("DeviceAction", "parse_action")}
    __all__ = exported_names(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def exported_names(exports: Mapping[str, Sequence[str]]) -> list[str]:
    """The public names of an export table ``{submodule: names}``, sorted (the package's ``__all__``)."""
    return sorted(name for names in exports.values() for name in names)


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package`` for an export table ``{submodule: names}``.

    Submodules are named relative to ``package`` (``".actions"``). ``__getattr__`` also imports a
    submodule read as an attribute (``digiq_trl.pipeline``), as an eager ``__init__`` would have
    made available; any other name raises :class:`AttributeError`.
    """
    home = {name: module for module, names in exports.items() for name in names}
    submodules = {info.name for info in pkgutil.iter_modules(sys.modules[package].__path__)}

    def __getattr__(name: str) -> Any:
        if name in home:
            value = getattr(importlib.import_module(home[name], package), name)
        elif name in submodules:
            value = importlib.import_module(f".{name}", package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | home.keys())

    return __getattr__, __dir__
