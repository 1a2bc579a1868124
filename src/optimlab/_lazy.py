"""Lazy attributes for a package: ``from optimlab import Adam`` imports torch, ``optimlab --help`` does not.

``lazy_attributes(__name__, {"Adam": ".optim", ...})`` returns the ``__getattr__`` and ``__dir__``
a package module sets (PEP 562): the named submodule is imported when the attribute is first read.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_attributes(package: str, names: Mapping[str, str],
                    fallback: Callable[[str], Any] | None = None) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is not None:
            return getattr(importlib.import_module(module, package), name)
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
