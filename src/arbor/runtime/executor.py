"""The local executor: one asyncio loop drives a batch's items with bounded concurrency.

It claims items in chunks under a lease, runs each through the batch's
:class:`~arbor.runtime.items.ItemRunner` and writes each result in its own transaction,
guarded by the lease (:class:`~arbor.store.batches.BatchRepository`). A heartbeat renews
the leases and watches the batch row, so a pause or cancel from another process (the CLI,
the API) stops this one. Only the items in flight are in memory.

What happens to an item whose call fails:

- a provider error that is worth repeating (5xx, 429, timeouts, resets; the LLM layer has
  already retried it) sends the item back to pending until it has had ``max_attempts``
  claims, then fails it with the last reason;
- an open circuit waits until the breaker allows a trial, without using an attempt (after
  a dozen such waits in one claim it counts as a failed try, so an upstream that stays
  down ends with failed items instead of a batch that never finishes);
- an exhausted budget hands the item back untouched and pauses the batch (reason
  ``budget``): what is in flight finishes, the rest stays pending;
- anything else fails the item with its reason; the batch goes on.

An item claimed more than ``max_attempts`` times was held by executors that died (its
lease expired each time): it fails instead of being tried forever.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import structlog

from arbor.core.errors import ArborError, BudgetExceededError, CircuitOpenError, ProviderError
from arbor.core.ids import new_owner
from arbor.core.logging import Redactor
from arbor.llm.client import LLMClient
from arbor.runtime.items import ItemError, ItemMeter, ItemOutcome, ItemRunner
from arbor.runtime.spec import BatchOptions
from arbor.store.batches import (
    BATCH_RUNNABLE,
    BatchProgress,
    BatchRecord,
    BatchRepository,
    ClaimedItem,
)

__all__ = ["LiveProgress", "LocalExecutor", "StopReason", "budget_scope"]

log = structlog.get_logger("arbor.runtime")

StopReason = Literal["budget", "paused", "cancelled"]
#: Longest wait for an open circuit before trying an item again.
_MAX_CIRCUIT_WAIT = 5.0
#: Open-circuit waits one claim of an item sits through before it counts as a failed try
#: (an upstream that stays down must not hold items forever).
_MAX_CIRCUIT_WAITS = 12
#: How often the heartbeat looks at the batch row (and renews leases at least this often).
_MAX_HEARTBEAT = 1.0
_REDACTOR = Redactor()


def budget_scope(batch_id: str) -> str:
    """The LLM budget scope of a batch (the LLM layer charges ``batch:<id>``)."""
    return f"batch:{batch_id}"


@dataclass(slots=True)
class LiveProgress:
    """Counters a progress bar reads while the executor runs (this process's view)."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    #: Items finished by this run (for the rate and ETA), and when it started.
    finished_here: int = 0
    retried: int = 0
    started: float = field(default_factory=time.monotonic)

    def take(self, stored: BatchProgress) -> None:
        """Adopt the stored counts and usage (every process's work on the batch)."""
        self.total, self.succeeded, self.failed = stored.total, stored.succeeded, stored.failed
        self.cancelled, self.cost_usd = stored.cancelled, stored.cost_usd
        self.input_tokens, self.output_tokens = stored.input_tokens, stored.output_tokens

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    def rate(self) -> float:
        """Items per second finished by this run."""
        elapsed = time.monotonic() - self.started
        return self.finished_here / elapsed if elapsed > 0 else 0.0


class LocalExecutor:
    """Runs one batch to completion, pause or cancellation in this event loop."""

    def __init__(
        self,
        repo: BatchRepository,
        client: LLMClient,
        runner: ItemRunner,
        batch_id: str,
        options: BatchOptions,
        *,
        owner: str | None = None,
    ) -> None:
        self.repo = repo
        self.client = client
        self.runner = runner
        self.batch_id = batch_id
        self.options = options
        self.owner = owner or new_owner()
        self.progress = LiveProgress()
        self.stop_reason: StopReason | None = None
        self._active: set[asyncio.Task[None]] = set()
        self._clock = client.clock

    def stop(self, reason: StopReason) -> None:
        """Claim nothing more; ``cancelled`` also stops the items in flight."""
        if self.stop_reason is None or reason == "cancelled":
            self.stop_reason = reason
        if reason == "cancelled":
            for task in self._active:
                task.cancel()

    async def run(self) -> BatchRecord:
        """Drive the batch until no item is left, or it is paused or cancelled; returns
        the batch as it is then."""
        record = await self.repo.get(self.batch_id, progress=True)
        if record.status not in BATCH_RUNNABLE:  # ended, or paused until a resume
            return record
        started = await self.repo.set_status(self.batch_id, "running", only_from=BATCH_RUNNABLE)
        if started is None:  # paused or ended between the two reads
            return await self.repo.get(self.batch_id, progress=True)
        live = record.progress
        assert live is not None
        self.progress.take(live)
        if self.options.budget_usd is not None:
            scope = budget_scope(self.batch_id)
            self.client.budgets.set_limit(scope, self.options.budget_usd)
            self.client.budgets.seed(scope, live.cost_usd)
        heartbeat = asyncio.create_task(self._heartbeat(), name=f"batch-heartbeat:{self.batch_id}")
        try:
            await self._loop()
        finally:
            if self.stop_reason == "cancelled":
                for task in self._active:
                    task.cancel()
            if self._active:
                await asyncio.gather(*self._active, return_exceptions=True)
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        return await self._finish()

    # ---- the claim loop ------------------------------------------------------------------
    async def _loop(self) -> None:
        concurrency = self.options.concurrency
        refill = max(1, concurrency // 8)  # claim in chunks: fewer transactions
        while self.stop_reason is None:
            free = concurrency - len(self._active)
            if free >= refill or (free > 0 and not self._active):
                claimed = await self.repo.claim(
                    self.batch_id, self.owner, free, self.options.lease_seconds
                )
                for item in claimed:
                    self._spawn(item)
                if claimed:
                    continue
            if self._active:
                await asyncio.wait(self._active, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                continue
            if await self._others_running():
                continue
            # Nothing runs anywhere; an item released after our last claim is pending again.
            if (await self.repo.progress(self.batch_id)).pending == 0:
                return

    async def _others_running(self) -> bool:
        """Items leased by other (maybe dead) executors: wait for them to finish or their
        leases to expire (then they are claimable). False when nothing is left at all."""
        expiry = await self.repo.next_lease_expiry(self.batch_id)
        if expiry is None:
            return False
        wait = (expiry - _utcnow()).total_seconds() + 0.05
        await self._clock.sleep(min(max(wait, 0.05), 1.0))
        return True

    def _spawn(self, item: ClaimedItem) -> None:
        task = asyncio.create_task(self._item(item), name=f"batch-item:{item.item}")
        self._active.add(task)
        task.add_done_callback(self._active.discard)

    # ---- one item ------------------------------------------------------------------------
    async def _item(self, claimed: ClaimedItem) -> None:
        limit = self.options.max_attempts
        if claimed.attempts > limit:
            reason = f"gave up after {limit} attempts: the executors holding it stopped"
            await self._fail(claimed, reason, ItemOutcome(None))
            return
        meter = ItemMeter(self.client, self.batch_id)

        async def remember_run(run_id: str) -> None:
            await self.repo.set_run_id(self.batch_id, claimed.item, self.owner, run_id)

        run_id = claimed.run_id
        circuit_waits = 0
        while True:
            try:
                output = await self.runner.run(
                    claimed.input, meter.client, run_id=run_id, on_run=remember_run
                )
            except CircuitOpenError as exc:
                if self.stop_reason is not None:
                    await self._release(claimed, None, uncount=True)
                    return
                circuit_waits += 1
                if circuit_waits > _MAX_CIRCUIT_WAITS:  # a long outage: this try is over
                    await self._retry_or_fail(claimed, _reason(exc), meter.outcome(None))
                    return
                await self._clock.sleep(min(max(exc.retry_after or 1.0, 0.05), _MAX_CIRCUIT_WAIT))
                continue
            except BudgetExceededError:
                await self._release(claimed, None, uncount=True)
                self.stop("budget")
                return
            except ProviderError as exc:
                if exc.retriable:
                    await self._retry_or_fail(claimed, _reason(exc), meter.outcome(None))
                else:
                    await self._fail(claimed, _reason(exc), meter.outcome(None))
                return
            except ArborError as exc:
                await self._fail(claimed, _reason(exc), meter.outcome(None))
                return
            except Exception as exc:  # a bug in a tool or workflow node: this item only
                log.exception("batch.item_crashed", batch_id=self.batch_id, item=claimed.item)
                await self._fail(claimed, _reason(exc), meter.outcome(None))
                return
            await self._succeed(claimed, meter.outcome(output))
            return

    async def _retry_or_fail(self, claimed: ClaimedItem, reason: str, outcome: ItemOutcome) -> None:
        """Back to pending for another claim, or failed once it had ``max_attempts``."""
        if claimed.attempts < self.options.max_attempts:
            self.progress.retried += 1
            await self._release(claimed, reason, uncount=False)
        else:
            await self._fail(claimed, reason, outcome)

    async def _succeed(self, claimed: ClaimedItem, outcome: ItemOutcome) -> None:
        written = await self.repo.complete(
            self.batch_id,
            claimed.item,
            self.owner,
            status="succeeded",
            output=outcome.output,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            cost_usd=outcome.cost_usd,
        )
        if written:
            self.progress.succeeded += 1
            self._count(outcome)
        else:
            log.info("batch.result_refused", batch_id=self.batch_id, item=claimed.item)

    async def _fail(self, claimed: ClaimedItem, reason: str, outcome: ItemOutcome) -> None:
        written = await self.repo.complete(
            self.batch_id,
            claimed.item,
            self.owner,
            status="failed",
            error=reason,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            cost_usd=outcome.cost_usd,
        )
        if written:
            self.progress.failed += 1
            self._count(outcome)

    async def _release(self, claimed: ClaimedItem, reason: str | None, *, uncount: bool) -> None:
        await self.repo.release(
            self.batch_id, claimed.item, self.owner, error=reason, uncount=uncount
        )

    def _count(self, outcome: ItemOutcome) -> None:
        p = self.progress
        p.finished_here += 1
        p.input_tokens += outcome.input_tokens
        p.output_tokens += outcome.output_tokens
        p.cost_usd += outcome.cost_usd

    # ---- heartbeat and the end -----------------------------------------------------------
    async def _heartbeat(self) -> None:
        """Renew leases and follow the batch's status set by others (pause, cancel)."""
        every = min(self.options.lease_seconds / 3.0, _MAX_HEARTBEAT)
        while True:
            await self._clock.sleep(every)
            try:
                await self.repo.renew(self.batch_id, self.owner, self.options.lease_seconds)
                status = (await self.repo.get(self.batch_id)).status
            except Exception:  # the database hiccuped: the next beat tries again
                log.exception("batch.heartbeat_failed", batch_id=self.batch_id)
                continue
            if status == "cancelled":
                self.stop("cancelled")
            elif status == "paused":
                self.stop("paused")

    async def _finish(self) -> BatchRecord:
        reason = self.stop_reason
        if reason == "budget":
            paused = await self.repo.set_status(
                self.batch_id, "paused", paused_reason="budget", only_from=("running",)
            )
            if paused is not None:
                log.info("batch.paused", batch_id=self.batch_id, reason="budget")
                return paused
        elif reason is None:
            live = await self.repo.progress(self.batch_id)
            if live.remaining == 0:
                done = await self.repo.set_status(
                    self.batch_id, "succeeded", only_from=("running",)
                )
                if done is not None:
                    return done
        await self.repo.snapshot(self.batch_id)
        return await self.repo.get(self.batch_id, progress=True)


def _reason(exc: BaseException) -> str:
    """The stored failure reason: the error's kind and message, scrubbed of secrets (an
    ItemError's message already says what is wrong with the item)."""
    if isinstance(exc, ItemError):
        return _REDACTOR.text(str(exc))
    kind = exc.kind if isinstance(exc, ArborError) else type(exc).__name__
    return _REDACTOR.text(f"{kind}: {exc}")


def _utcnow() -> datetime:
    return datetime.now(UTC)
