"""Checks a generated module passes before it is executed in the importing process: it
parses, defines every requested name at top level, passes the import policy, and (when
asked) imports and runs its argument-less functions in the OS sandbox."""

from __future__ import annotations

import ast
import json
import re
import sys
import tempfile
from pathlib import Path

import structlog

from arbor.apps.autogen.policy import ImportPolicy
from arbor.runtime.sandbox import (
    Sandbox,
    SandboxConfig,
    SandboxError,
    SandboxLimits,
    SandboxUnavailableError,
)

__all__ = ["extract_code", "smoke_call", "top_level_names", "validate_source"]

log = structlog.get_logger("arbor.autogen")

_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(reply: str) -> str:
    """The module source: the first fenced block when the reply has one, else the reply."""
    match = _FENCE.search(reply)
    return (match.group(1) if match else reply).strip() + "\n"


def top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def validate_source(code: str, names: list[str], policy: ImportPolicy) -> str | None:
    """Why ``code`` is refused, or ``None`` when it passes the static checks."""
    if not code.strip():
        return "the reply holds no code"
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return f"syntax error at line {exc.lineno}: {exc.msg}"
    missing = [n for n in names if n not in top_level_names(tree)]
    if missing:
        return "the module does not define " + ", ".join(missing) + " at top level"
    violations = policy.check(tree)
    if violations:
        listed = "; ".join(str(v) for v in violations[:5])
        return f"the import policy refused it: {listed}"
    return None


_SMOKE = """
import inspect, json, sys
sys.path.insert(0, ".")
import {module} as m
out = {{}}
for name in {names!r}:
    obj = getattr(m, name)
    if inspect.isfunction(obj):
        params = inspect.signature(obj).parameters.values()
        required = [p for p in params if p.default is p.empty
                    and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not required and not inspect.iscoroutinefunction(obj):
            obj()
            out[name] = "called"
            continue
    out[name] = "defined"
print(json.dumps(out))
"""


async def smoke_call(
    module: str, code: str, names: list[str], *, allow_unisolated: bool = False
) -> str | None:
    """Import the module and call its argument-less functions in the OS sandbox; the reason
    it failed, or ``None``. Raises :class:`SandboxUnavailableError` when OS isolation is
    missing and ``allow_unisolated`` is not set (fails closed; no reply could fix that)."""
    config = SandboxConfig(
        allow_unisolated=allow_unisolated,
        limits=SandboxLimits(cpu_seconds=10, wall_seconds=20.0, memory_bytes=512 * 1024 * 1024),
    )
    with tempfile.TemporaryDirectory(prefix="arbor-autogen-") as tmp:
        root = Path(tmp)
        (root / f"{module}.py").write_text(code, encoding="utf-8")
        script = _SMOKE.format(module=module, names=names)
        try:
            result = await Sandbox(config).run([sys.executable, "-I", "-c", script], root)
        except SandboxUnavailableError:
            raise
        except SandboxError as exc:
            return f"the smoke call could not run: {exc}"
    if not result.isolated:
        log.warning("autogen.smoke_unisolated", module=module, reason="allow_unisolated is set")
    if result.killed_by is not None:
        return f"the smoke call was stopped by the sandbox's {result.killed_by} limit"
    if result.exit_code != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        return f"importing or calling it in the sandbox failed:\n{tail}"
    try:
        json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return "the smoke call printed no result"
    return None
