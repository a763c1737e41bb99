"""Package faces whose names load on first use.

``import arbor`` (and so every ``import arbor.x``, and the CLI's start-up) must not import the
SDKs, the database stack and the agents behind the public names: a package lists where each
of its public names lives and :func:`lazy_exports` gives it the module ``__getattr__`` and
``__dir__`` that import a name's home the first time the name is used. Type checkers read the
same names from the package's ``if TYPE_CHECKING:`` imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, homes: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose public name ``n`` is the attribute
    ``n`` of the module ``homes[n]`` (a dotted module path)."""
    table = dict(homes)

    def __getattr__(name: str) -> Any:
        home = table.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *table})

    return __getattr__, __dir__
