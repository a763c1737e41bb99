"""The service's batch manager: creates batches and drives them in background tasks, joins
batches other processes are running, and hands its items back at shutdown.

Each driven batch gets its own LLM client from :meth:`BatchService.open_client` (the batch's
rpm/tpm as its model's limits, paced, shared through Redis when configured; usage recorded in
the service's database) and every call is attributed to the API key that created the batch
(``BatchSpec.key_id``, stamped by a view of the client, ``client.view(key_id=...)``, under
the executor's per-item batch view), under that key's rpm/tpm and budget.

Joining: at start-up and every ``poll_seconds`` the manager drives every ``pending`` or
``running`` batch it is not driving yet. Item leases make several executors on one batch
safe (one result per item), so two servers on one database share a batch, and a killed
server's items are taken over once their leases expire. A batch this server cannot drive (a
workflow, agent or model it does not know) is left to the others, never failed.

Executors: :func:`executor_for` is the one seam choosing how a batch is driven — the local
asyncio executor by default; ``settings.executor == "ray"`` loads ``executor_factory`` from
:mod:`arbor.runtime.ray_executor`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import importlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from arbor.agents.tools import Tool
from arbor.core.config import ModelLimits, Settings
from arbor.core.errors import ArborError, ConfigError, ConflictError, NotFoundError
from arbor.core.ids import new_owner
from arbor.llm.client import LLMClient
from arbor.llm.model import Model
from arbor.runtime.batches import BatchService, ExportFormat, WorkflowResolver
from arbor.runtime.executor import StopReason
from arbor.runtime.spec import BatchSpec
from arbor.store import Database, KeyRepository, UsageRepository
from arbor.store._util import utcnow
from arbor.store.batches import (
    BATCH_ACTIVE,
    BatchItemRecord,
    BatchProgress,
    BatchRecord,
    BatchStatus,
    NewItem,
)

__all__ = ["BatchDriver", "BatchManager", "ExecutorFactory", "executor_for", "local_executor"]

log = structlog.get_logger("arbor.runtime.batch_manager")

#: Seconds a shutdown lets the items in flight finish before it stops them (their leases
#: are then released, so another server takes them at once).
_SHUTDOWN_GRACE = 3.0
#: Seconds a server leaves alone a batch it found it cannot drive before it looks again.
_SKIP_SECONDS = 60.0
#: Seconds over which the finishing rate is measured.
_RATE_WINDOW = 60.0


class BatchDriver(Protocol):
    """What drives one batch in this process (the local executor, or a Ray one)."""

    async def run(self) -> BatchRecord: ...

    def stop(self, reason: StopReason) -> None: ...


#: Builds the driver of ``batch_id`` on ``client`` under lease owner ``owner``.
ExecutorFactory = Callable[[BatchService, str, LLMClient, str], Awaitable[BatchDriver]]


async def local_executor(
    service: BatchService, batch_id: str, client: LLMClient, owner: str
) -> BatchDriver:
    """The in-process asyncio executor (the default)."""
    executor = await service.executor(batch_id, client)
    executor.owner = owner
    return executor


def executor_for(settings: Settings) -> ExecutorFactory:
    """How batches are driven under ``settings.executor``: ``local`` (default) or ``ray``
    (``arbor.runtime.ray_executor.executor_factory``, an :data:`ExecutorFactory`)."""
    if settings.executor == "local":
        return local_executor
    try:
        module = importlib.import_module("arbor.runtime.ray_executor")
        factory: ExecutorFactory = module.executor_factory
    except (ImportError, AttributeError):
        raise ConfigError(
            "the Ray executor is not available in this build; set ARBOR_EXECUTOR=local",
            variable="ARBOR_EXECUTOR",
        ) from None
    return factory


class BatchManager:
    """Owns the background task of every batch this process drives (one per batch)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        models: Mapping[str, Model] | None = None,
        workflows: WorkflowResolver | None = None,
        tools: Mapping[str, Tool] | None = None,
        executor: ExecutorFactory | None = None,
        poll_seconds: float | None = None,
        owner: str | None = None,
    ) -> None:
        self.service = BatchService(db, settings, models=models, workflows=workflows, tools=tools)
        self.repo = self.service.repo
        self.settings = settings
        self.executor = executor or executor_for(settings)
        self.poll_seconds = poll_seconds or settings.service.batch_poll_seconds
        self.owner = owner or new_owner()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._drivers: dict[str, BatchDriver] = {}
        #: Every batch this process drove (whose leases it may hold at shutdown).
        self._driven: set[str] = set()
        #: Batches this server found it cannot drive, and until when it leaves them alone.
        self._skip_until: dict[str, float] = {}
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    # ---- creating ------------------------------------------------------------------------
    async def create(self, items: Iterable[NewItem], spec: BatchSpec, *, name: str) -> BatchRecord:
        """Store the batch (the spec is checked first) and start driving it here."""
        self._check_open()
        record = await self.service.create_from_items(items, spec, name=name)
        self.drive(record.id, asked=True)
        return await self.repo.get(record.id, progress=True)

    async def resume(self, batch_id: str, *, budget_usd: float | None = None) -> BatchRecord:
        """Make a paused batch runnable (optionally with a new budget) and drive it."""
        self._check_open()
        record = await self.service.resume(batch_id, budget_usd=budget_usd)
        self.drive(batch_id, asked=True)
        return record

    async def pause(self, batch_id: str) -> BatchRecord:
        """Pause the batch; when driven here it stops claiming at once (other servers
        notice within a second)."""
        record = await self.service.pause(batch_id)
        self._stop_local(batch_id, "paused")
        return record

    async def cancel(self, batch_id: str) -> BatchRecord:
        """Cancel the batch; when driven here its items in flight stop at once."""
        record = await self.service.cancel(batch_id)
        self._stop_local(batch_id, "cancelled")
        return record

    def _stop_local(self, batch_id: str, reason: StopReason) -> None:
        driver = self._drivers.get(batch_id)
        if driver is not None:
            driver.stop(reason)

    # ---- driving -------------------------------------------------------------------------
    def active(self, batch_id: str) -> bool:
        """Whether this process drives the batch right now."""
        task = self._tasks.get(batch_id)
        return task is not None and not task.done()

    def active_ids(self) -> list[str]:
        return [b for b in self._tasks if self.active(b)]

    def drive(self, batch_id: str, *, asked: bool = False) -> bool:
        """Drive the batch in a background task unless this process already does (or,
        unless ``asked`` by a user, found a moment ago that it cannot)."""
        if self._closed or self.active(batch_id):
            return False
        if not asked and self._skip_until.get(batch_id, 0.0) > time.monotonic():
            return False
        self._skip_until.pop(batch_id, None)
        task = asyncio.create_task(self._drive(batch_id), name=f"batch:{batch_id}")
        self._tasks[batch_id] = task
        self._driven.add(batch_id)
        task.add_done_callback(lambda t: self._forget(batch_id, t))
        return True

    async def _drive(self, batch_id: str) -> None:
        try:
            async with self.service.open_client(batch_id) as client:
                try:
                    record = await self.repo.get(batch_id)
                    key_id = BatchSpec.model_validate(record.spec).key_id
                    if key_id is not None:
                        await self._apply_key_limits(client, key_id)
                    driver = await self.executor(
                        self.service, batch_id, client.view(key_id=key_id), self.owner
                    )
                except (ArborError, ValueError) as exc:
                    self._cannot_run(batch_id, exc)
                    return
                self._drivers[batch_id] = driver
                current = (await self.repo.get(batch_id)).status
                if self._closed or current not in ("pending", "running"):
                    return  # paused, cancelled or ended meanwhile: nothing to drive
                done = await driver.run()
                log.info("batch.driven", batch_id=batch_id, status=done.status)
        except (ArborError, ValueError) as exc:  # e.g. a model this server cannot serve
            self._cannot_run(batch_id, exc)
        finally:
            self._drivers.pop(batch_id, None)

    async def _apply_key_limits(self, client: LLMClient, key_id: str) -> None:
        """The creating key's requests/min, tokens/min and budget (seeded with what it
        spent so far) on the batch's client, as the service applies them to its requests."""
        try:
            record = await KeyRepository(self.service.db).get(key_id)
        except NotFoundError:  # deleted since: nothing to apply
            return
        if record.rpm is not None or record.tpm is not None:
            client.set_key_limits(key_id, ModelLimits(rpm=record.rpm, tpm=record.tpm))
        if record.budget_usd is not None:
            scope = f"key:{key_id}"
            client.budgets.set_limit(scope, record.budget_usd)
            spent = await UsageRepository(self.service.db).total_cost(key_id=key_id)
            client.budgets.seed(scope, spent)

    def _cannot_run(self, batch_id: str, exc: BaseException) -> None:
        """This server cannot drive the batch (a workflow, agent or model it does not know,
        a spec it cannot read): leave it to the others, and look again in a while. Like
        runs of unknown workflows, it is not failed: another process may serve it."""
        log.warning("batch.not_driven_here", batch_id=batch_id, reason=str(exc))
        self._skip_until[batch_id] = time.monotonic() + _SKIP_SECONDS

    def _forget(self, batch_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(batch_id) is task:
            del self._tasks[batch_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("batch.task_crashed", batch_id=batch_id, exc_info=task.exception())

    # ---- joining -------------------------------------------------------------------------
    async def join_running(self) -> list[str]:
        """Start driving every pending or running batch this process does not drive yet;
        returns their ids."""
        ids = await self.repo.ids_in(("pending", "running"))
        joined = [batch_id for batch_id in ids if self.drive(batch_id)]
        if joined:
            log.info("batch.joined", count=len(joined), batch_ids=joined)
        return joined

    async def start(self) -> list[str]:
        """Join the batches left running, then keep joining every ``poll_seconds``."""
        joined = await self.join_running()
        if self._poller is None and not self._closed:
            self._poller = asyncio.create_task(self._poll(), name="batch-poll")
        return joined

    async def _poll(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.join_running()
            except Exception:  # the database hiccuped: try again next time
                log.warning("batch.poll_failed", exc_info=True)

    # ---- reading -------------------------------------------------------------------------
    async def page(
        self, *, status: BatchStatus | None, limit: int, cursor: str | None
    ) -> tuple[list[BatchRecord], str | None]:
        """Batches newest first after ``cursor``; ValueError for a cursor not made here."""
        before = _decode_cursor(cursor) if cursor is not None else None
        found = await self.repo.list(status=status, limit=limit + 1, before=before)
        records = found[:limit]
        more = len(found) > limit
        return records, _encode_cursor(records[-1]) if more and records else None

    async def item(self, batch_id: str, item: int) -> BatchItemRecord:
        """One item; NotFoundError for an unknown batch or item."""
        await self.repo.get(batch_id)
        found = await self.repo.items(batch_id, after=item - 1, limit=1)
        if not found or found[0].item != item:
            raise NotFoundError(f"batch {batch_id!r} has no item {item}")
        return found[0]

    async def progress_of(self, record: BatchRecord, *, rate: bool) -> dict[str, Any]:
        """Counts per state and usage (live for unfinished batches, the final snapshot for
        finished ones), with the rate over the last minute and an ETA when ``rate``."""
        live = record.progress
        if live is None and record.status in BATCH_ACTIVE:
            live = await self.repo.progress(record.id)
        if live is None:
            live = BatchProgress(
                total=record.total,
                succeeded=record.succeeded,
                failed=record.failed,
                cancelled=record.cancelled,
                input_tokens=record.input_tokens,
                output_tokens=record.output_tokens,
                cost_usd=record.cost_usd,
            )
        out: dict[str, Any] = {
            "total": live.total,
            "pending": live.pending,
            "running": live.running,
            "succeeded": live.succeeded,
            "failed": live.failed,
            "cancelled": live.cancelled,
            "done": live.done,
            "input_tokens": live.input_tokens,
            "output_tokens": live.output_tokens,
            "cost_usd": live.cost_usd,
            "rate_per_second": None,
            "eta_seconds": None,
        }
        if rate and record.status in ("pending", "running"):
            per_second = await self._rate(record)
            out["rate_per_second"] = per_second
            if per_second > 0:
                out["eta_seconds"] = round(live.remaining / per_second, 1)
        return out

    async def _rate(self, record: BatchRecord) -> float:
        """Items finished per second over the last minute (or since the batch started)."""
        now = utcnow()
        since = now - timedelta(seconds=_RATE_WINDOW)
        count = await self.repo.finished_since(record.id, since)
        window = min(_RATE_WINDOW, max((now - record.created_at).total_seconds(), 1.0))
        return round(count / window, 3)

    async def export_chunks(self, batch_id: str, fmt: ExportFormat) -> AsyncIterator[bytes]:
        """Every item as ``arbor batch export`` writes it, in chunks for a streamed answer
        (the export runs alongside, a page of items at a time)."""
        sink = _Chunks()

        async def produce() -> None:
            try:
                await self.service.export(batch_id, sink, fmt)  # type: ignore[arg-type]
            finally:
                sink.queue.put_nowait(None)

        task = asyncio.create_task(produce(), name=f"batch-export:{batch_id}")
        try:
            buffer: list[str] = []
            while True:
                text = await sink.queue.get()
                if text is None:
                    break
                buffer.append(text)
                if len(buffer) >= 256 or sink.queue.empty():
                    yield "".join(buffer).encode()
                    buffer.clear()
            if buffer:
                yield "".join(buffer).encode()
            await task  # re-raise a failure of the export
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    @staticmethod
    def describe(record: BatchRecord) -> str:
        """The template's first line, or the agent's or workflow's name."""
        try:
            return BatchSpec.model_validate(record.spec).describe()
        except ValueError:
            return record.kind

    # ---- shutdown ------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Stop driving: claim nothing more, let the items in flight finish for a moment,
        then stop them and release their leases (they go back to pending, nothing lost).
        The batches stay ``running`` for another server (or the next start) to continue."""
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        for driver in list(self._drivers.values()):
            driver.stop("paused")  # a local stop: the batch row is untouched
        tasks = [t for t in self._tasks.values() if not t.done()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=_SHUTDOWN_GRACE)
            for driver in list(self._drivers.values()):
                driver.stop("cancelled")  # stops the items still in flight
            if pending:
                await asyncio.wait(pending, timeout=_SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for batch_id in sorted(self._driven):
            await self._release_held(batch_id)

    async def _release_held(self, batch_id: str) -> None:
        """Hand back the items this process still holds (a stopped item task leaves its
        lease; releasing it now spares the others the wait for its expiry)."""
        try:
            held = await self.repo.items(batch_id, status="running", limit=100_000)
            for item in held:
                if item.lease_owner == self.owner:
                    await self.repo.release(
                        batch_id, item.item, self.owner, error=None, uncount=False
                    )
        except Exception:
            log.warning("batch.release_failed", batch_id=batch_id, exc_info=True)

    def _check_open(self) -> None:
        if self._closed:
            raise ConflictError("the server is shutting down; try another one or later")


class _Chunks:
    """A text sink :meth:`BatchService.export` writes into, read by a streamed answer."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()

    def write(self, text: str) -> int:
        self.queue.put_nowait(text)
        return len(text)


def _encode_cursor(record: BatchRecord) -> str:
    raw = json.dumps([record.created_at.isoformat(), record.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, batch_id = json.loads(raw)
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise ValueError("naive")
        return when, str(batch_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ValueError(f"invalid cursor {cursor!r}") from None
