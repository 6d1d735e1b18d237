"""Import-light package namespaces: names resolved from their modules on first access (PEP 562)."""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable, Callable]:
    """`(__all__, __getattr__, __dir__)` for a package whose `exports` map names to their modules."""
    names = sorted(exports)

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}; available: {names}")

    def __dir__():
        return names

    return names, __getattr__, __dir__
