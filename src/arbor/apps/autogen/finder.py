"""The import hook: ``arbor.autogen.<module>`` imports that no file satisfies are generated.

The finder answers only for the ``arbor.autogen.`` prefix and is appended to
``sys.meta_path`` after the path finders, so a real submodule on disk always wins. A loaded
module gets a module-level ``__getattr__``: a later ``from arbor.autogen.tokens import other``
(or ``tokens.other``) regenerates the module with its existing names plus ``other``.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import linecache
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from arbor.apps.autogen.cache import CacheEntry
from arbor.apps.autogen.caller import CallerContext, collect_sites, find_caller, import_names
from arbor.apps.autogen.errors import AutogenImportError
from arbor.apps.autogen.runtime import AutogenRuntime, cache_root

__all__ = ["PREFIX", "AutogenFinder"]

PREFIX = "arbor.autogen."


class AutogenFinder(importlib.abc.MetaPathFinder):
    def __init__(self, runtime: AutogenRuntime) -> None:
        self.runtime = runtime
        self._lock = threading.RLock()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(PREFIX):
            return None
        module = fullname[len(PREFIX) :]
        if "." in module or not module.isidentifier() or module.startswith("_"):
            return None
        caller = find_caller()
        names, aliases = import_names(caller, fullname)
        caller.sites = collect_sites(caller, aliases)
        # Generation waits for exec_module: find_spec runs under the global import lock,
        # which would block every import the generating thread makes.
        loader = AutogenLoader(self, module, names, caller)
        return importlib.machinery.ModuleSpec(fullname, loader)

    def _origin(self, entry: CacheEntry) -> str:
        if entry.file:
            return str((cache_root(self.runtime.settings) / entry.file).resolve())
        return f"<arbor.autogen.{entry.module}:{entry.key[:12]}>"

    def extend(self, module: ModuleType, name: str) -> Any:
        """``module.__getattr__``: generate ``name`` into a loaded module when the caller's
        code really imports or reads it (tools probing attributes get AttributeError)."""
        fullname = module.__name__
        if name.startswith("_"):
            raise AttributeError(f"module {fullname!r} has no attribute {name!r}")
        caller = find_caller()
        if not _asks_for(caller, fullname, name):
            raise AttributeError(f"module {fullname!r} has no attribute {name!r}")
        caller.sites = collect_sites(caller, {name: name})
        current: CacheEntry | None = getattr(module, "__autogen_entry__", None)
        with self._lock:
            entry = self.runtime.generate(fullname[len(PREFIX) :], [name], caller, current)
        _execute(module, entry, self._origin(entry), self)
        return module.__dict__[name]


class AutogenLoader(importlib.abc.Loader):
    def __init__(
        self, finder: AutogenFinder, module: str, names: list[str], caller: CallerContext
    ) -> None:
        self.finder = finder
        self.module = module
        self.names = names
        self.caller = caller
        self.entry: CacheEntry | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        with self.finder._lock:
            self.entry = self.finder.runtime.generate(self.module, self.names, self.caller)
        origin = self.finder._origin(self.entry)
        module.__file__ = origin
        if module.__spec__ is not None:
            module.__spec__.origin = origin
        _execute(module, self.entry, origin, self.finder)

    def get_source(self, fullname: str) -> str:
        return self.entry.code if self.entry is not None else ""


def _execute(module: ModuleType, entry: CacheEntry, origin: str, finder: AutogenFinder) -> None:
    lines = entry.code.splitlines(keepends=True)
    linecache.cache[origin] = (len(entry.code), None, lines, origin)  # tracebacks show it
    code = compile(entry.code, origin, "exec")
    module.__dict__["__autogen_entry__"] = entry
    try:
        exec(code, module.__dict__)
    except Exception as exc:  # validated code can still fail when run: say whose it is
        # Not kept: the next import asks the model again instead of failing the same way.
        finder.runtime.forget(entry)
        raise AutogenImportError(
            entry.module,
            entry.names,
            f"the generated module raised {type(exc).__name__} when executed: {exc} "
            f"(it was dropped from the cache; smoke=True runs a module in the sandbox first)",
        ) from exc
    if "__getattr__" not in module.__dict__ or getattr(
        module.__dict__["__getattr__"], "__autogen__", False
    ):
        module.__dict__["__getattr__"] = _getattr_for(module, finder)


def _getattr_for(module: ModuleType, finder: AutogenFinder) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:
        return finder.extend(module, name)

    __getattr__.__autogen__ = True  # type: ignore[attr-defined]
    return __getattr__


def _asks_for(caller: CallerContext, fullname: str, name: str) -> bool:
    if caller.tree is None:
        return False
    for node in ast.walk(caller.tree):
        if getattr(node, "lineno", -1) != caller.line and not (
            isinstance(node, ast.ImportFrom)
            and node.lineno <= caller.line <= (node.end_lineno or node.lineno)
        ):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == fullname:
            if any(a.name == name for a in node.names):
                return True
        if isinstance(node, ast.Attribute) and node.attr == name:
            return True
    return False


def installed(finder: AutogenFinder) -> bool:
    return finder in sys.meta_path
