"""Where usage records of LLM calls go.

The pipeline hands every call's record to a :class:`UsageSink` synchronously and never waits
for storage: :class:`StoreUsageSink` buffers records and writes them in batches from one
owned background task, so a call costs a list append, not a database transaction.
``aclose()`` flushes what is left.

A :data:`UsageObserver` sees the same records as they are made, in-process: a view of a
client (``client.view(on_usage=...)``) meters one batch item's or one module's calls with
one, through the pipeline's own accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import structlog

from arbor.store.usage import UsageRecord, UsageRepository

__all__ = ["MemoryUsageSink", "StoreUsageSink", "UsageObserver", "UsageRecord", "UsageSink"]

log = structlog.get_logger("arbor.llm.usage")

#: Called with each finished call's record (success, cache hit or failure) as it is made.
UsageObserver = Callable[[UsageRecord], None]


class UsageSink(Protocol):
    def record(self, record: UsageRecord) -> None: ...

    async def aclose(self) -> None: ...


class MemoryUsageSink:
    """Keeps records in a list: for tests, benchmarks and one-shot CLI calls."""

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def record(self, record: UsageRecord) -> None:
        self.records.append(record)

    @property
    def total_cost(self) -> float:
        return sum(r.cost_usd for r in self.records)

    async def aclose(self) -> None:
        return None


class StoreUsageSink:
    """Buffers records and writes them to the store in batches.

    A failed write keeps the batch and tries again on the next flush, so records are not
    lost while the database is briefly unavailable.
    """

    def __init__(
        self, repository: UsageRepository, *, interval: float = 0.5, batch_size: int = 200
    ) -> None:
        self._repo = repository
        self._interval = interval
        self._batch_size = batch_size
        self._buffer: list[UsageRecord] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False

    def record(self, record: UsageRecord) -> None:
        if self._closed:
            raise RuntimeError("usage sink is closed")
        self._buffer.append(record)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="arbor-usage-flush"
            )
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    async def flush(self) -> int:
        """Write what is buffered when it starts (records arriving meanwhile wait for the
        next flush, so steady traffic is written in full batches, not a stream of tiny
        ones); returns how many records were written."""
        pending = len(self._buffer)
        written = 0
        while written < pending and self._buffer:
            batch = self._buffer[: min(self._batch_size, pending - written)]
            await self._repo.add_many(batch)
            del self._buffer[: len(batch)]
            written += len(batch)
        return written

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # keep the records; the next flush retries
                log.error("usage.flush_failed", error=str(exc), pending=len(self._buffer))

    async def aclose(self) -> None:
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()
