"""``BatchService``: the one facade the CLI (and later the API and dashboard) use for batches.

It checks a batch before storing anything (the template parses, the agent exists, the
workflow is known, the model id is well formed), creates it from a dataset file or any
iterable of rows, runs or resumes it with the :class:`~arbor.runtime.executor.LocalExecutor`,
pauses, cancels and exports it.

Each run gets its own :class:`~arbor.llm.client.LLMClient` built from the settings (through
:func:`~arbor.llm.redis_backends.build_client`: Redis-backed limits when configured), with
the batch's ``rpm``/``tpm`` registered as the limits of its model (lower than configured
ones never raised), a :class:`~arbor.runtime.pacing.PacedRateLimiter` in front of the
sliding-window limiter, and the batch's budget as the ``batch:<id>`` scope seeded with what
the batch already spent. The response cache and usage records are the shared, persistent
ones, so a resumed batch answers repeated prompts from the cache.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TextIO

from arbor.agents.definitions import AgentDefinition
from arbor.agents.tools import Tool
from arbor.agents.workflow.graph import Workflow
from arbor.agents.workflow.registry import WorkflowRegistry
from arbor.agents.workflow.sql import SQLCheckpointStore
from arbor.core.clock import SystemClock
from arbor.core.config import ModelLimits, Settings
from arbor.core.errors import ArborError
from arbor.llm.client import LLMClient
from arbor.llm.model import Model
from arbor.llm.redis_backends import build_client
from arbor.llm.usage import StoreUsageSink
from arbor.runtime.datasets import DatasetFormat, read_dataset
from arbor.runtime.executor import LocalExecutor
from arbor.runtime.items import AgentItems, ItemRunner, TemplateItems, WorkflowItems
from arbor.runtime.pacing import PacedRateLimiter
from arbor.runtime.spec import BatchSpec
from arbor.store import AgentRepository, Database, UsageRepository
from arbor.store.batches import (
    BATCH_ACTIVE,
    BatchItemRecord,
    BatchRecord,
    BatchRepository,
    BatchStatus,
    NewItem,
)

__all__ = ["BatchConflictError", "BatchService", "ExportFormat", "WorkflowResolver"]

#: Builds the workflow ``name`` for a model id (None: the settings' default model).
WorkflowResolver = Callable[[str, str | None], Workflow[Any]]
ExportFormat = Literal["jsonl", "csv"]
_EXPORT_PAGE = 1000


class BatchConflictError(ArborError):
    """The batch is not in a state that allows the operation (e.g. resuming a finished one)."""

    kind = "conflict"

    def __init__(self, message: str, *, batch_id: str) -> None:
        super().__init__(message)
        self.batch_id = batch_id


class BatchService:
    """Batches over one database; ``models`` serves model ids with given doubles (tests),
    ``workflows`` resolves workflow names (default: the installed ``arbor.workflows``), ``tools`` is
    the toolbox stored agents pick their tools from."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        models: Mapping[str, Model] | None = None,
        workflows: WorkflowResolver | None = None,
        tools: Mapping[str, Tool] | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.repo = BatchRepository(db)
        self.models = dict(models or {})
        self.workflows: WorkflowResolver = workflows or WorkflowRegistry()
        self.tools = dict(tools or {})
        self.checkpoints = SQLCheckpointStore(db)

    # ---- creating ------------------------------------------------------------------------
    async def create(
        self,
        dataset: Path,
        spec: BatchSpec,
        *,
        name: str | None = None,
        fmt: DatasetFormat | None = None,
    ) -> BatchRecord:
        """Check the spec, then store the file's rows as items (malformed rows as failed
        items). DatasetError if the file cannot be read at all."""
        await self.runner(spec)  # refuse a bad template/agent/workflow before storing
        rows = read_dataset(dataset, fmt)
        return await self.create_from_items(rows, spec, name=name or dataset.name)

    async def create_from_items(
        self, items: Iterable[NewItem], spec: BatchSpec, *, name: str
    ) -> BatchRecord:
        """Store a batch from rows already read (e.g. an upload); the spec is checked."""
        await self.runner(spec)
        stored = spec.model_dump(mode="json", exclude_none=True)
        return await self.repo.create(name=name, kind=spec.kind, spec=stored, items=items)

    async def runner(self, spec: BatchSpec) -> ItemRunner:
        """The item runner for ``spec``; TemplateSyntaxError, NotFoundError (unknown agent or
        workflow) or AgentDefinitionError when the batch could never run."""
        model = spec.model
        if spec.kind == "template":
            o = spec.options
            chosen = model or self.settings.default_model
            return TemplateItems(
                spec.target, chosen, temperature=o.temperature, max_tokens=o.max_tokens
            )
        if spec.kind == "agent":
            record = await AgentRepository(self.db).get_by_name(spec.target)
            return AgentItems(AgentDefinition.from_record(record).build(self.tools), model)
        return WorkflowItems(self.workflows(spec.target, model), self.checkpoints)

    # ---- running -------------------------------------------------------------------------
    async def executor(self, batch_id: str, client: LLMClient) -> LocalExecutor:
        """An executor for the stored batch on ``client`` (see :meth:`open_client`)."""
        record = await self.repo.get(batch_id)
        spec = BatchSpec.model_validate(record.spec)
        runner = await self.runner(spec)
        return LocalExecutor(self.repo, client, runner, batch_id, spec.options)

    @asynccontextmanager
    async def open_client(self, batch_id: str, *, share: float = 1.0) -> AsyncIterator[LLMClient]:
        """The LLM client a run of this batch uses (its limits, paced); closed on exit.
        ``share``: this process's part of the pace when several executors drive the batch."""
        record = await self.repo.get(batch_id)
        spec = BatchSpec.model_validate(record.spec)
        settings = _with_batch_limits(self.settings, spec)
        clock = SystemClock()
        client = await build_client(
            settings,
            models=self.models,
            clock=clock,
            usage_sink=StoreUsageSink(UsageRepository(self.db)),
            # Pacing over the configured limiter: in-process, or Redis shared by workers.
            wrap_limiter=lambda inner: PacedRateLimiter(inner, clock, share=share),
        )
        try:
            if spec.kind == "template":  # resolve the provider now: an unknown model fails
                client.model(spec.model or settings.default_model)  # before any item runs
            yield client
        finally:
            await client.aclose()

    async def run(self, batch_id: str) -> BatchRecord:
        """Run the batch here until it ends, pauses or is cancelled (a paused batch stays
        paused: :meth:`resume` makes it runnable)."""
        async with self.open_client(batch_id) as client:
            executor = await self.executor(batch_id, client)
            return await executor.run()

    async def resume(self, batch_id: str, *, budget_usd: float | None = None) -> BatchRecord:
        """Make a paused batch runnable again (optionally with a new budget); the caller
        then runs it. BatchConflictError if it already finished."""
        record = await self.repo.get(batch_id)
        if record.status not in BATCH_ACTIVE:
            raise BatchConflictError(
                f"batch {batch_id} is {record.status}; only pending, running or paused "
                "batches resume",
                batch_id=batch_id,
            )
        if budget_usd is not None:
            spec = BatchSpec.model_validate(record.spec)
            spec.options.budget_usd = budget_usd
            await self.repo.update_spec(batch_id, spec.model_dump(mode="json", exclude_none=True))
        updated = await self.repo.set_status(batch_id, "pending", only_from=("paused",))
        return updated or await self.repo.get(batch_id)

    async def pause(self, batch_id: str) -> BatchRecord:
        """Pause (reason ``user``); a running executor stops claiming within a second."""
        paused = await self.repo.set_status(
            batch_id, "paused", paused_reason="user", only_from=("pending", "running")
        )
        if paused is None:
            status = (await self.repo.get(batch_id)).status
            raise BatchConflictError(f"batch {batch_id} is {status}", batch_id=batch_id)
        return paused

    async def cancel(self, batch_id: str) -> BatchRecord:
        cancelled = await self.repo.cancel(batch_id)
        if cancelled is None:
            status = (await self.repo.get(batch_id)).status
            raise BatchConflictError(f"batch {batch_id} is already {status}", batch_id=batch_id)
        return cancelled

    # ---- reading -------------------------------------------------------------------------
    async def get(self, batch_id: str) -> BatchRecord:
        return await self.repo.get(batch_id, progress=True)

    async def list(
        self, *, status: BatchStatus | None = None, limit: int = 100
    ) -> list[BatchRecord]:
        return await self.repo.list(status=status, limit=limit)

    async def iter_items(self, batch_id: str) -> AsyncIterator[BatchItemRecord]:
        """Every item in order, a page at a time (never the whole batch in memory)."""
        await self.repo.get(batch_id)  # NotFoundError for an unknown id
        after = -1
        while True:
            page = await self.repo.items(batch_id, after=after, limit=_EXPORT_PAGE)
            for item in page:
                yield item
            if len(page) < _EXPORT_PAGE:
                return
            after = page[-1].item

    async def export(self, batch_id: str, out: TextIO, fmt: ExportFormat = "jsonl") -> int:
        """Write every item to ``out``; returns how many. JSONL: one object per item with
        ``item``, ``input``, ``status``, ``output``, ``error`` and the item's usage. CSV:
        the same columns, ``input`` and non-text ``output`` as JSON text."""
        count = 0
        writer = csv.writer(out) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(_COLUMNS)
        async for item in self.iter_items(batch_id):
            row = export_row(item)
            if writer is None:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                writer.writerow([_cell(row[c], c) for c in _COLUMNS])
            count += 1
        return count


_COLUMNS = (
    "item",
    "input",
    "status",
    "output",
    "error",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cost_usd",
)


def export_row(item: BatchItemRecord) -> dict[str, Any]:
    """An item as exported (and as the API will show it)."""
    return {
        "item": item.item,
        "input": item.input,
        "status": item.status,
        "output": item.output,
        "error": item.error,
        "attempts": item.attempts,
        "input_tokens": item.input_tokens,
        "output_tokens": item.output_tokens,
        "cost_usd": item.cost_usd,
    }


def _cell(value: Any, column: str) -> str:
    if value is None:
        return ""
    if column == "input" or (column == "output" and not isinstance(value, str)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _with_batch_limits(settings: Settings, spec: BatchSpec) -> Settings:
    """``settings`` with the batch's rpm/tpm as its model's limits (never above what is
    configured: the stricter of the two wins)."""
    o = spec.options
    if o.rpm is None and o.tpm is None:
        return settings
    model = spec.model or settings.default_model
    table = settings.llm.limits
    provider = model.partition(":")[0]
    configured = next(
        (table[k] for k in (model, f"{provider}:*", "*") if k in table), ModelLimits()
    )
    limits = ModelLimits(rpm=_stricter(o.rpm, configured.rpm), tpm=_stricter(o.tpm, configured.tpm))
    llm = settings.llm.model_copy(update={"limits": {**table, model: limits}})
    return settings.model_copy(update={"llm": llm})


def _stricter(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
