"""Generating one module: cache lookup, prompt, model call, validation, bounded retries.

Each module's calls go through a view of the client stamped ``agent_id=autogen:<module>``,
so the store's usage records attribute them, and the view sums their usage and cost into the
cache entry (``arbor autogen show`` prints it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import structlog

from arbor.apps.autogen.cache import AutogenCache, CacheEntry, ModuleUsage, cache_key
from arbor.apps.autogen.caller import CallerContext
from arbor.apps.autogen.codebase import (
    CodebaseIndex,
    analyze_project,
    project_root,
    render_context,
)
from arbor.apps.autogen.config import AutogenConfig
from arbor.apps.autogen.errors import AutogenImportError
from arbor.apps.autogen.policy import ImportPolicy
from arbor.apps.autogen.prompt import build_messages, retry_message
from arbor.apps.autogen.validate import extract_code, smoke_call, validate_source
from arbor.core.errors import ArborError
from arbor.llm.client import LLMClient
from arbor.llm.tokens import tokenizer_for
from arbor.llm.types import ChatRequest, Message
from arbor.llm.usage import UsageRecord
from arbor.runtime.sandbox import SandboxUnavailableError

__all__ = ["Generator", "ModuleRequest"]

log = structlog.get_logger("arbor.autogen")


@dataclass(slots=True)
class ModuleRequest:
    module: str
    names: list[str]
    caller: CallerContext | None = None
    #: The module's current entry, when the importing process has it loaded.
    existing: CacheEntry | None = None


class _Meter:
    """Sums the usage and cost of one module's calls: ``client`` is the view of ``base``
    they go through, stamped ``agent_id=autogen:<module>``, that reports each one here."""

    def __init__(self, base: LLMClient, module: str) -> None:
        self.usage = ModuleUsage()
        self.client = base.view(agent_id=f"autogen:{module}", on_usage=self._observe)

    def _observe(self, record: UsageRecord) -> None:
        self.usage.calls += 1
        self.usage.input_tokens += record.input_tokens
        self.usage.output_tokens += record.output_tokens
        self.usage.cost_usd += record.cost_usd


class Generator:
    def __init__(self, client: LLMClient, config: AutogenConfig, cache: AutogenCache) -> None:
        self.client = client
        self.config = config
        self.cache = cache
        self.model = config.model or client.settings.default_model
        self.policy = ImportPolicy(config.allow_imports)
        self._indexes: dict[Path, CodebaseIndex] = {}
        #: What this generator's model calls cost per module, failed attempts included
        #: (a module served by the cache spent nothing).
        self.spent: dict[str, ModuleUsage] = {}

    async def generate(self, request: ModuleRequest) -> CacheEntry:
        """The module for ``request``, from the cache or the model; raises
        :class:`AutogenImportError` when no valid module could be produced."""
        cfg = self.config
        caller = request.caller
        context = caller.context_hash() if caller is not None else ""
        key = cache_key(request.module, request.names, cfg.description, context, self.model)
        existing = request.existing
        if cfg.cache:
            hit = await self.cache.get(key)
            if hit is not None:
                return hit
            existing = existing or await self.cache.latest(
                request.module, cfg.description, self.model
            )
            if existing is not None and set(request.names) <= set(existing.names):
                self.cache.remember(existing)  # already generated for this description
                return existing
        names = sorted(set(request.names) | set(existing.names if existing else ()))
        messages = build_messages(
            description=cfg.description,
            module=request.module,
            names=names,
            requested=request.names,
            existing=existing.code if existing else None,
            caller=caller,
            codebase=await self._codebase(caller, names),
        )
        meter = _Meter(self.client, request.module)
        try:
            return await self._attempts(request, names, messages, key, context, meter)
        finally:
            self.spent.setdefault(request.module, ModuleUsage()).add(meter.usage)

    async def _attempts(
        self,
        request: ModuleRequest,
        names: list[str],
        messages: list[Message],
        key: str,
        context: str,
        meter: _Meter,
    ) -> CacheEntry:
        """Ask, validate and retry with the problem until a reply passes or the retries end."""
        cfg = self.config
        problem = "no attempt was made"
        attempts = cfg.retries + 1
        for attempt in range(1, attempts + 1):
            req = ChatRequest(
                model=self.model,
                messages=messages,
                max_tokens=cfg.max_tokens,
                temperature=0.2,
                cache=False,
            )
            try:
                reply = await meter.client.complete(req)
            except ArborError as exc:
                raise AutogenImportError(
                    request.module, names, f"the model call failed: {exc}", attempts=attempt
                ) from exc
            code = extract_code(reply.text)
            problem = validate_source(code, names, self.policy) or ""
            if not problem and cfg.smoke:
                try:
                    problem = (
                        await smoke_call(
                            request.module, code, names, allow_unisolated=cfg.allow_unisolated
                        )
                        or ""
                    )
                except SandboxUnavailableError as exc:  # no reply can fix the machine: no retry
                    raise AutogenImportError(
                        request.module, names, f"the smoke call cannot run: {exc}", attempts=attempt
                    ) from exc
            if not problem:
                entry = CacheEntry(
                    key=key,
                    module=request.module,
                    names=names,
                    description=cfg.description,
                    model=self.model,
                    context_hash=context,
                    code=code,
                    usage=meter.usage,
                )
                log.info(
                    "autogen.generated",
                    module=request.module,
                    names=names,
                    attempts=attempt,
                    cost_usd=meter.usage.cost_usd,
                )
                if cfg.cache:
                    return await self.cache.put(entry)
                self.cache.remember(entry)
                return entry
            log.warning("autogen.refused", module=request.module, attempt=attempt, problem=problem)
            messages = [*messages, reply.message, retry_message(problem)]
        raise AutogenImportError(request.module, names, problem, attempts=attempts)

    async def _codebase(self, caller: CallerContext | None, names: list[str]) -> str:
        if caller is None or caller.path is None or self.config.context_tokens <= 0:
            return ""
        root = project_root(caller.path.resolve())
        index = self._indexes.get(root)
        if index is None:
            index = await asyncio.to_thread(analyze_project, root)
            self._indexes[root] = index
        provider, _, name = self.model.partition(":")
        tokenizer = tokenizer_for(provider, name)
        return await asyncio.to_thread(
            render_context, index, names, tokenizer, self.config.context_tokens
        )
