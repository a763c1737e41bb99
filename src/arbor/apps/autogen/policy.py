"""The import policy generated code must pass before it is executed.

This is a reviewer's checklist applied to the syntax tree, not a sandbox: it refuses code that
plainly reaches for processes, sockets, native memory, dynamic code or the filesystem's
destructive calls, so a model's mistake (or a prompt-injected instruction) is caught with a
reason the model can act on. Isolation, when wanted, comes from the OS sandbox (the smoke
call). Each denied name carries why it is denied; ``allow`` lifts a name or a whole root.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DENIED_CALLS", "DENIED_MODULES", "ImportPolicy", "PolicyViolation"]

#: Module (or root) → why generated code may not import it.
DENIED_MODULES: dict[str, str] = {
    "subprocess": "runs other programs",
    "socket": "opens network connections",
    "ssl": "opens network connections",
    "http": "makes network requests",
    "urllib": "makes network requests",
    "ftplib": "makes network requests",
    "smtplib": "makes network requests",
    "telnetlib": "makes network requests",
    "requests": "makes network requests",
    "httpx": "makes network requests",
    "aiohttp": "makes network requests",
    "asyncio.subprocess": "runs other programs",
    "multiprocessing": "starts processes",
    "pty": "starts processes",
    "ctypes": "reaches native memory",
    "cffi": "reaches native memory",
    "importlib": "loads code dynamically",
    "builtins": "replaces Python's builtins",
    "pickle": "runs code while loading data",
    "marshal": "loads code objects",
    "shutil": "removes and moves files",
    "webbrowser": "starts programs",
    # a small model echoing the caller's import: the module would import itself
    "arbor.autogen": "imports a generated module; define the names here instead",
}

#: ``module.function`` or builtin → why generated code may not call it.
DENIED_CALLS: dict[str, str] = {
    "os.system": "runs a shell command",
    "os.popen": "runs a shell command",
    "os.fork": "starts processes",
    "os.kill": "signals other processes",
    "os.remove": "deletes files",
    "os.unlink": "deletes files",
    "os.rmdir": "deletes directories",
    "os.removedirs": "deletes directories",
    "os.exec": "replaces the process (os.exec*)",
    "os.spawn": "starts processes (os.spawn*)",
    "os.posix_spawn": "starts processes",
    "eval": "runs code from a string",
    "exec": "runs code from a string",
    "compile": "builds code from a string",
    "__import__": "loads modules dynamically",
    "breakpoint": "stops in a debugger",
}
_PREFIX_CALLS = ("os.exec", "os.spawn")


@dataclass(frozen=True, slots=True)
class PolicyViolation:
    what: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.what} is not allowed ({self.why})"


class ImportPolicy:
    """Deny-list by default; ``allow`` names roots (``"socket"``) or exact entries."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow = frozenset(allow)

    def _module_reason(self, module: str) -> str | None:
        parts = module.split(".")
        for i in range(len(parts), 0, -1):
            prefix = ".".join(parts[:i])
            if prefix in self.allow:
                return None
            if prefix in DENIED_MODULES:
                return DENIED_MODULES[prefix]
        return None

    def _call_reason(self, dotted: str) -> str | None:
        if dotted in self.allow or dotted.split(".")[0] in self.allow:
            return None
        if dotted in DENIED_CALLS:
            return DENIED_CALLS[dotted]
        for prefix in _PREFIX_CALLS:
            if dotted.startswith(prefix) and prefix not in self.allow:
                return DENIED_CALLS[prefix]
        return None

    def check(self, tree: ast.Module) -> list[PolicyViolation]:
        found: list[PolicyViolation] = []
        aliases: dict[str, str] = {}  # local name → dotted origin ("system" → "os.system")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    aliases[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
                    self._add(found, f"import {alias.name}", node, self._module_reason(alias.name))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                why = self._module_reason(node.module)
                self._add(found, f"import from {node.module}", node, why)
                for alias in node.names:
                    dotted = f"{node.module}.{alias.name}"
                    aliases[alias.asname or alias.name] = dotted
                    if why is None:
                        sub = self._module_reason(dotted) or self._call_reason(dotted)
                        self._add(found, f"import of {dotted}", node, sub)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                target = _dotted(node.func, aliases)
                if target:
                    self._add(found, f"call to {target}()", node, self._call_reason(target))
        return found

    @staticmethod
    def _add(
        found: list[PolicyViolation], what: str, node: ast.stmt | ast.expr, why: str | None
    ) -> None:
        if why is not None:
            found.append(PolicyViolation(what, node.lineno, why))


def _dotted(func: ast.expr, aliases: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    head = aliases.get(func.id, func.id)
    return ".".join([head, *reversed(parts)])
