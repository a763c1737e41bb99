"""``arbor autogen prefetch FILE.py``: generate a file's ``arbor.autogen`` modules ahead of time.

The file is read, never run. Its ``arbor.autogen`` imports are found in the syntax tree and read
back with the same functions the import hook uses (:func:`~arbor.apps.autogen.caller.import_names`
and :func:`~arbor.apps.autogen.caller.collect_sites`), with the file itself as the caller; its
``init("...")`` gives the description and the options that shape the cache key and validation
(``model``, ``allow_imports``, ``smoke``, ...). Every module then goes through the import path's
:class:`~arbor.apps.autogen.generator.Generator` and cache, several at once, so a later real
import of the file finds each module cached and makes no model call. A module imported by
several statements is generated once with the union of their names; each statement's own
import is then served by the cache's "already has these names" rule.
"""

from __future__ import annotations

import ast
import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from arbor.apps.autogen.cache import AutogenCache, CacheEntry, ModuleUsage
from arbor.apps.autogen.caller import CallerContext, CallSite, collect_sites, import_names
from arbor.apps.autogen.config import AutogenConfig
from arbor.apps.autogen.errors import AutogenImportError
from arbor.apps.autogen.generator import Generator, ModuleRequest
from arbor.llm.client import LLMClient

__all__ = [
    "InitCall",
    "ModuleResult",
    "ModuleWant",
    "PrefetchError",
    "PrefetchPlan",
    "plan_file",
    "prefetch",
]

_FACE = "arbor.autogen"
_PREFIX = _FACE + "."
#: What ``from arbor.autogen import X`` may name besides generated modules.
_FACE_NAMES = {"init", "explain", "reset"}
#: ``init`` keywords that shape the cache key, the prompt or validation, with their types.
_INIT_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "retries": int,
    "smoke": bool,
    "allow_unisolated": bool,
    "allow_imports": (list, tuple),
    "cache": bool,
    "context_tokens": int,
    "max_tokens": int,
}


class PrefetchError(ValueError):
    """The file cannot be prefetched as written (missing, unparseable, an import form the
    hook cannot generate); the message says which and why."""


@dataclass(slots=True)
class InitCall:
    """The file's ``init(...)``: its literal description and the options read from it."""

    line: int
    description: str | None
    options: dict[str, Any] = field(default_factory=dict)
    #: Keywords whose value is not a literal (prefetch uses the default for them).
    unread: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ModuleWant:
    """One module the file imports: the union of the names asked for, where, and the file as
    the caller (its sites are those of every statement)."""

    module: str
    names: list[str]
    lines: list[int]
    caller: CallerContext


@dataclass(slots=True)
class PrefetchPlan:
    path: Path
    init: InitCall | None
    modules: list[ModuleWant]


@dataclass(slots=True)
class ModuleResult:
    module: str
    names: list[str]
    status: Literal["cached", "generated", "failed"]
    #: What this prefetch spent on the module (zero when it was cached).
    usage: ModuleUsage = field(default_factory=ModuleUsage)
    entry: CacheEntry | None = None
    error: str | None = None


# ---- reading the file ---------------------------------------------------------------------
def plan_file(path: Path) -> PrefetchPlan:
    """The modules ``path`` imports from ``arbor.autogen`` and its ``init`` call; raises
    :class:`PrefetchError` when the file is missing, unreadable or unparseable, or imports a
    module in a form the import hook cannot generate."""
    if not path.exists():
        raise PrefetchError(f"{path} does not exist")
    if not path.is_file():
        raise PrefetchError(f"{path} is not a file")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PrefetchError(f"cannot read {path}: {exc}") from exc
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise PrefetchError(f"{path} does not parse: line {exc.lineno}: {exc.msg}") from exc
    return PrefetchPlan(path, find_init(tree), _wants(path, source, tree))


def _wants(path: Path, source: str, tree: ast.Module) -> list[ModuleWant]:
    found: dict[str, ModuleWant] = {}
    statements = sorted(
        (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)),
        key=lambda n: (n.lineno, n.col_offset),
    )
    for node in statements:
        for module in _modules_of(node):
            caller = CallerContext(path=path, line=node.lineno, source=source, tree=tree)
            try:
                names, aliases = import_names(caller, _PREFIX + module)
            except ImportError as exc:
                raise PrefetchError(f"line {node.lineno}: {exc}") from exc
            sites = collect_sites(caller, aliases)
            want = found.get(module)
            if want is None:
                caller.sites = sites
                found[module] = ModuleWant(module, list(names), [node.lineno], caller)
                continue
            want.names += [n for n in names if n not in want.names]
            want.lines.append(node.lineno)
            want.caller.sites = _merge_sites(want.caller.sites, sites)
    return list(found.values())


def _modules_of(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The generated modules one statement imports (a nested one is named so that
    :func:`import_names` explains why it cannot be generated)."""
    if isinstance(node, ast.ImportFrom):
        if node.level != 0 or node.module is None:
            return []
        if node.module == _FACE:
            others = [a.name for a in node.names if a.name not in _FACE_NAMES]
            if others:
                raise PrefetchError(
                    f"line {node.lineno}: 'from arbor.autogen import {others[0]}' cannot be "
                    f"generated: use 'from arbor.autogen.{others[0]} import NAME'"
                )
            return []
        modules = [node.module]
    else:
        modules = [a.name for a in node.names]
    return [m[len(_PREFIX) :].split(".")[0] for m in modules if m.startswith(_PREFIX)]


def _merge_sites(first: list[CallSite], more: list[CallSite]) -> list[CallSite]:
    seen = {(s.name, s.line) for s in first}
    merged = first + [s for s in more if (s.name, s.line) not in seen]
    return sorted(merged, key=lambda s: (s.line, s.name))


def find_init(tree: ast.Module) -> InitCall | None:
    """The first ``init(...)`` of ``arbor.autogen`` the file makes (by any import form)."""
    functions, modules = _init_bindings(tree)
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id in functions)
            or (
                isinstance(node.func, ast.Attribute)
                and node.func.attr == "init"
                and ast.unparse(node.func.value) in modules
            )
        )
    ]
    if not calls:
        return None
    call = min(calls, key=lambda c: (c.lineno, c.col_offset))
    init = InitCall(line=call.lineno, description=None)
    given = call.args[0] if call.args else None
    for kw in call.keywords:
        if kw.arg == "description":
            given = kw.value
        elif kw.arg in _INIT_OPTIONS:
            _read_option(init, kw.arg, kw.value)
    if isinstance(given, ast.Constant) and isinstance(given.value, str) and given.value.strip():
        init.description = given.value
    return init


def _init_bindings(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Local names bound to ``arbor.autogen.init``, and expressions naming the module."""
    functions: set[str] = set()
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module == _FACE:
                functions |= {a.asname or a.name for a in node.names if a.name == "init"}
            elif node.module == "arbor":
                modules |= {a.asname or a.name for a in node.names if a.name == "autogen"}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == _FACE and alias.asname:
                    modules.add(alias.asname)
                elif alias.name.startswith("arbor"):
                    modules.add(_FACE)  # ``import arbor.autogen[.x]`` binds ``arbor``
    return functions, modules


def _read_option(init: InitCall, name: str, node: ast.expr) -> None:
    try:
        value: Any = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        init.unread.append(name)
        return
    if value is None:  # ``model=None`` and the like: the default
        return
    if name == "allow_imports":
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            init.options[name] = tuple(value)
            return
    elif isinstance(value, _INIT_OPTIONS[name]):
        init.options[name] = value
        return
    init.unread.append(name)


def config_for(
    plan: PrefetchPlan,
    *,
    description: str | None = None,
    model: str | None = None,
    concurrency: int | None = None,
) -> AutogenConfig:
    """The configuration the file's ``init`` would build, with the command's overrides.

    Raises :class:`PrefetchError` when no description is known or the options are invalid."""
    options = dict(plan.init.options) if plan.init is not None else {}
    text = description or (plan.init.description if plan.init is not None else None)
    if not text:
        where = (
            f"its init() at line {plan.init.line} has no literal description"
            if plan.init is not None
            else "it calls no arbor.autogen init(...)"
        )
        raise PrefetchError(f"no description for {plan.path}: {where}; pass --description")
    if options.get("cache") is False:
        raise PrefetchError(
            f"{plan.path} calls init(..., cache=False): its imports never read the cache, so "
            "prefetching cannot help them"
        )
    if model is not None:
        options["model"] = model
    if concurrency is not None:
        options["concurrency"] = concurrency
    try:
        return AutogenConfig(description=text, **options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "option"
        raise PrefetchError(f"invalid {where}: {first['msg']}") from exc


# ---- generating ---------------------------------------------------------------------------
async def prefetch(
    plan: PrefetchPlan, client: LLMClient, config: AutogenConfig, cache: AutogenCache
) -> list[ModuleResult]:
    """Generate every module of ``plan`` with the import path's :class:`Generator` (at most
    ``config.concurrency`` at once; the client's rate limits apply to each call); one result
    per module, in the file's order. A module that cannot be generated is a ``failed``
    result, never an exception; a module served by the cache made no call (``cached``)."""
    generator = Generator(client, config, cache)
    gate = asyncio.Semaphore(config.concurrency)

    async def one(want: ModuleWant) -> ModuleResult:
        async with gate:
            try:
                entry = await generator.generate(
                    ModuleRequest(want.module, list(want.names), want.caller)
                )
            except AutogenImportError as exc:
                error: str | None = exc.reason
                entry = None
        spent = generator.spent.get(want.module, ModuleUsage())
        if entry is None:
            return ModuleResult(want.module, want.names, "failed", spent, error=error)
        status: Literal["cached", "generated"] = "generated" if spent.calls else "cached"
        return ModuleResult(want.module, entry.names, status, spent, entry)

    return list(await asyncio.gather(*(one(w) for w in plan.modules)))
