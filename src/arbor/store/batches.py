"""Batches and their items: creation in bulk, claiming under leases, one result per item.

The item state machine::

    pending ──claim──▶ running ──complete──▶ succeeded | failed(reason)
       ▲                  │
       └──release/retry───┘        pending | running ──cancel──▶ cancelled

A claim takes the lowest pending items (and running ones whose lease expired: their
executor died) and stamps them with the claimant's ``lease_owner`` and an expiry. Every
later write of that item (its result, a release, a renewal) is one transaction guarded by
``status = 'running' AND lease_owner = :owner``: an executor whose lease was reclaimed, or
whose batch was cancelled, changes nothing and learns so from the return value. The primary
key ``(batch_id, item)`` keeps exactly one row, hence one result, per item.

Counts and usage are read from the item rows (:meth:`BatchRepository.progress`, one indexed
``GROUP BY``); the totals on the batch row are a snapshot written when the executor asks.
On PostgreSQL a claim skips rows other claimants hold locked (``FOR UPDATE SKIP LOCKED``);
on SQLite the write transaction holds the database's single write lock.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, cast

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from arbor.core.errors import NotFoundError
from arbor.core.ids import new_id
from arbor.store._batch_records import (
    BATCH_ACTIVE,
    BATCH_RUNNABLE,
    BatchItemRecord,
    BatchItemStatus,
    BatchKind,
    BatchProgress,
    BatchRecord,
    BatchStatus,
    ClaimedItem,
    NewItem,
)
from arbor.store._sqlite_batches import CHUNK, insert_batch
from arbor.store._util import utcnow
from arbor.store.engine import SQLITE_BUSY_TIMEOUT_MS, Database
from arbor.store.tables import BatchItemRow, BatchRow

__all__ = [
    "BATCH_ACTIVE",
    "BATCH_RUNNABLE",
    "BatchItemRecord",
    "BatchItemStatus",
    "BatchKind",
    "BatchProgress",
    "BatchRecord",
    "BatchRepository",
    "BatchStatus",
    "ClaimedItem",
    "NewItem",
]

I = BatchItemRow  # noqa: E741 - the item table, named short because every query uses it
_TERMINAL_ITEM = ("succeeded", "failed", "cancelled")


class BatchRepository:
    """Each method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # ---- creating ------------------------------------------------------------------------
    async def create(
        self, *, name: str, kind: BatchKind, spec: dict[str, Any], items: Iterable[NewItem]
    ) -> BatchRecord:
        """Store a batch and its items (consumed once, in chunks) in one transaction.

        Malformed items (``NewItem.error``) are stored as failed with that reason.
        """
        batch_id = new_id("bat")
        now = utcnow()
        direct = self._db.direct
        if direct is not None:
            header = (batch_id, name, kind, spec)
            await asyncio.to_thread(
                insert_batch, direct.path, SQLITE_BUSY_TIMEOUT_MS, header, items, now
            )
        else:
            await self._create_with_session(batch_id, name, kind, spec, items, now)
        return await self.get(batch_id)

    async def _create_with_session(
        self,
        batch_id: str,
        name: str,
        kind: BatchKind,
        spec: dict[str, Any],
        items: Iterable[NewItem],
        now: datetime,
    ) -> None:
        async with self._db.session(write=True) as s:
            s.add(_new_batch_row(batch_id, name, kind, spec, now))
            await s.flush()
            total = failed = 0
            rows = _item_dicts(batch_id, items, now)
            while chunk := list(islice(rows, CHUNK)):
                await s.execute(insert(I), chunk)
                total += len(chunk)
                failed += sum(1 for r in chunk if r["status"] == "failed")
            await s.execute(
                update(BatchRow)
                .where(BatchRow.id == batch_id)
                .values(total=total, failed=failed)
                .execution_options(synchronize_session=False)
            )

    # ---- reading -------------------------------------------------------------------------
    async def get(self, batch_id: str, *, progress: bool = False) -> BatchRecord:
        """The batch (with live counts when ``progress``); NotFoundError if unknown."""
        async with self._db.session() as s:
            row = await s.get(BatchRow, batch_id)
            if row is None:
                raise NotFoundError(f"no batch with id {batch_id!r}")
            live = await _progress(s, batch_id) if progress else None
            return _batch_record(row, live)

    async def list(
        self,
        *,
        status: BatchStatus | None = None,
        limit: int = 100,
        before: tuple[datetime, str] | None = None,
    ) -> builtins.list[BatchRecord]:
        """Batches newest first; ``before`` (a batch's ``created_at`` and id) pages on from
        that batch (keyset pagination: stable while batches are being created)."""
        query = select(BatchRow).order_by(BatchRow.created_at.desc(), BatchRow.id.desc())
        if status is not None:
            query = query.where(BatchRow.status == status)
        if before is not None:
            created_at, last_id = before
            query = query.where(
                or_(
                    BatchRow.created_at < created_at,
                    and_(BatchRow.created_at == created_at, BatchRow.id < last_id),
                )
            )
        async with self._db.session() as s:
            rows = (await s.scalars(query.limit(limit))).all()
        return [_batch_record(r, None) for r in rows]

    async def ids_in(self, statuses: Sequence[BatchStatus]) -> builtins.list[str]:
        """Ids of the batches in any of ``statuses``, oldest first, read in one query (a
        batch moving between two of them is never missed)."""
        query = (
            select(BatchRow.id)
            .where(BatchRow.status.in_(statuses))
            .order_by(BatchRow.created_at, BatchRow.id)
        )
        async with self._db.session() as s:
            return builtins.list((await s.scalars(query)).all())

    async def finished_since(self, batch_id: str, since: datetime) -> int:
        """How many of the batch's items succeeded or failed at or after ``since``."""
        query = select(func.count()).where(
            I.batch_id == batch_id,
            I.status.in_(("succeeded", "failed")),
            I.finished_at >= since,
        )
        async with self._db.session() as s:
            return int((await s.scalar(query)) or 0)

    async def progress(self, batch_id: str) -> BatchProgress:
        async with self._db.session() as s:
            return await _progress(s, batch_id)

    async def items(
        self,
        batch_id: str,
        *,
        after: int = -1,
        limit: int = 1000,
        status: BatchItemStatus | None = None,
    ) -> builtins.list[BatchItemRecord]:
        """Items in order after index ``after`` (keyset pagination)."""
        query = select(I).where(I.batch_id == batch_id, I.item > after)
        if status is not None:
            query = query.where(I.status == status)
        async with self._db.session() as s:
            rows = (await s.scalars(query.order_by(I.item).limit(limit))).all()
        return [_item_record(r) for r in rows]

    # ---- the executor's side -------------------------------------------------------------
    async def claim(
        self, batch_id: str, owner: str, limit: int, lease_seconds: float
    ) -> builtins.list[ClaimedItem]:
        """Lease up to ``limit`` items to ``owner``: expired leases first, then the lowest
        pending items. Each claim counts as an attempt."""
        now = utcnow()
        expires = now + timedelta(seconds=lease_seconds)
        postgres = self._db.dialect == "postgresql"
        claimed: list[ClaimedItem] = []
        async with self._db.session(write=True) as s:
            for expired in (True, False):
                want = limit - len(claimed)
                if want <= 0:
                    break
                pick = select(I.item).where(I.batch_id == batch_id)
                if expired:
                    pick = pick.where(I.status == "running", I.lease_expires_at < now)
                else:
                    pick = pick.where(I.status == "pending")
                pick = pick.order_by(I.item).limit(want)
                if postgres:
                    pick = pick.with_for_update(skip_locked=True)
                # Picked first, then updated: PostgreSQL may run an IN (... LIMIT) subquery
                # of an UPDATE more than once and so lease more than ``limit`` rows.
                picked = list((await s.scalars(pick)).all())
                if not picked:
                    continue
                result = await s.execute(
                    update(I)
                    .where(I.batch_id == batch_id, I.item.in_(picked))
                    .values(
                        status="running",
                        lease_owner=owner,
                        lease_expires_at=expires,
                        attempts=I.attempts + 1,
                        started_at=now,
                    )
                    .returning(I.item, I.input, I.attempts, I.run_id)
                    .execution_options(synchronize_session=False)
                )
                claimed += [ClaimedItem(r[0], r[1], r[2], r[3]) for r in result.all()]
        claimed.sort(key=lambda c: c.item)
        return claimed

    async def complete(
        self,
        batch_id: str,
        item: int,
        owner: str,
        *,
        status: BatchItemStatus,
        output: Any = None,
        error: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> bool:
        """Write the item's result if ``owner`` still holds its lease; False otherwise
        (reclaimed by another executor, or the batch was cancelled)."""
        if status not in _TERMINAL_ITEM:
            raise ValueError(f"complete() needs a terminal status, not {status!r}")
        values = {
            "status": status,
            "output": output,
            "error": error,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": cost_usd,
            "finished_at": utcnow(),
            "lease_owner": None,
            "lease_expires_at": None,
        }
        return await self._guarded(batch_id, item, owner, values)

    async def release(
        self, batch_id: str, item: int, owner: str, *, error: str | None, uncount: bool
    ) -> bool:
        """Hand a held item back as pending (to retry it, or because the batch paused);
        ``uncount`` takes back the attempt when nothing was sent upstream."""
        values: dict[str, Any] = {
            "status": "pending",
            "error": error,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if uncount:
            values["attempts"] = I.attempts - 1
        return await self._guarded(batch_id, item, owner, values)

    async def set_run_id(self, batch_id: str, item: int, owner: str, run_id: str) -> bool:
        """Remember the durable workflow run of an item (so a retry resumes it)."""
        return await self._guarded(batch_id, item, owner, {"run_id": run_id})

    async def renew(self, batch_id: str, owner: str, lease_seconds: float) -> int:
        """Extend every lease ``owner`` holds in the batch; returns how many it holds."""
        expires = utcnow() + timedelta(seconds=lease_seconds)
        async with self._db.session(write=True) as s:
            result = await s.execute(
                update(I)
                .where(I.batch_id == batch_id, I.status == "running", I.lease_owner == owner)
                .values(lease_expires_at=expires)
                .execution_options(synchronize_session=False)
            )
            return _rowcount(result)

    async def _guarded(self, batch_id: str, item: int, owner: str, values: dict[str, Any]) -> bool:
        async with self._db.session(write=True) as s:
            result = await s.execute(
                update(I)
                .where(
                    I.batch_id == batch_id,
                    I.item == item,
                    I.status == "running",
                    I.lease_owner == owner,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            return _rowcount(result) == 1

    # ---- the batch's lifecycle -----------------------------------------------------------
    async def set_status(
        self,
        batch_id: str,
        status: BatchStatus,
        *,
        paused_reason: str | None = None,
        error: str | None = None,
        only_from: Sequence[BatchStatus] | None = None,
    ) -> BatchRecord | None:
        """Move the batch to ``status`` and snapshot its totals; None when it was not in
        ``only_from`` (nothing changed). NotFoundError if unknown."""
        async with self._db.session(write=True) as s:
            # Locked (PostgreSQL): a status change waits for a concurrent one and sees it.
            row = await s.get(BatchRow, batch_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"no batch with id {batch_id!r}")
            if only_from is not None and row.status not in only_from:
                return None
            live = await _progress(s, batch_id)
            now = utcnow()
            row.status = status
            row.paused_reason = paused_reason if status == "paused" else None
            row.error = error
            row.updated_at = now
            row.finished_at = None if status in BATCH_ACTIVE else now
            _snapshot(row, live)
            return _batch_record(row, live)

    async def cancel(self, batch_id: str) -> BatchRecord | None:
        """Cancel the batch and every item not finished yet (running ones too: their
        executors' results are then refused); None if it had already finished."""
        async with self._db.session(write=True) as s:
            row = await s.get(BatchRow, batch_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"no batch with id {batch_id!r}")
            if row.status not in BATCH_ACTIVE:
                return None
            now = utcnow()
            await s.execute(
                update(I)
                .where(I.batch_id == batch_id, I.status.in_(("pending", "running")))
                .values(
                    status="cancelled",
                    error="cancelled",
                    lease_owner=None,
                    lease_expires_at=None,
                    finished_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            live = await _progress(s, batch_id)
            row.status, row.paused_reason, row.updated_at, row.finished_at = (
                "cancelled",
                None,
                now,
                now,
            )
            _snapshot(row, live)
            return _batch_record(row, live)

    async def update_spec(self, batch_id: str, spec: dict[str, Any]) -> None:
        """Replace the batch's spec (a resume with new options, e.g. a larger budget)."""
        async with self._db.session(write=True) as s:
            row = await s.get(BatchRow, batch_id)
            if row is None:
                raise NotFoundError(f"no batch with id {batch_id!r}")
            row.spec = spec
            row.updated_at = utcnow()

    async def snapshot(self, batch_id: str) -> BatchProgress:
        """Write the live counts and usage onto the batch row; returns them."""
        async with self._db.session(write=True) as s:
            row = await s.get(BatchRow, batch_id)
            if row is None:
                raise NotFoundError(f"no batch with id {batch_id!r}")
            live = await _progress(s, batch_id)
            _snapshot(row, live)
            row.updated_at = utcnow()
            return live

    async def next_lease_expiry(self, batch_id: str) -> datetime | None:
        """When the earliest lease of a running item ends (None: nothing is running)."""
        async with self._db.session() as s:
            value = await s.scalar(
                select(func.min(I.lease_expires_at)).where(
                    I.batch_id == batch_id, I.status == "running"
                )
            )
        return value


# ---- helpers ----------------------------------------------------------------------------


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


async def _progress(s: AsyncSession, batch_id: str) -> BatchProgress:
    rows = (
        await s.execute(
            select(
                I.status,
                func.count(),
                func.coalesce(func.sum(I.input_tokens), 0),
                func.coalesce(func.sum(I.output_tokens), 0),
                func.coalesce(func.sum(I.cost_usd), 0.0),
            )
            .where(I.batch_id == batch_id)
            .group_by(I.status)
        )
    ).all()
    counts = {status: int(n) for status, n, *_ in rows}
    return BatchProgress(
        total=sum(counts.values()),
        pending=counts.get("pending", 0),
        running=counts.get("running", 0),
        succeeded=counts.get("succeeded", 0),
        failed=counts.get("failed", 0),
        cancelled=counts.get("cancelled", 0),
        input_tokens=sum(int(r[2]) for r in rows),
        output_tokens=sum(int(r[3]) for r in rows),
        cost_usd=sum(float(r[4]) for r in rows),
    )


def _snapshot(row: BatchRow, live: BatchProgress) -> None:
    row.total = live.total
    row.succeeded, row.failed, row.cancelled = live.succeeded, live.failed, live.cancelled
    row.input_tokens, row.output_tokens = live.input_tokens, live.output_tokens
    row.cost_usd = live.cost_usd


def _new_batch_row(
    batch_id: str, name: str, kind: BatchKind, spec: dict[str, Any], now: datetime
) -> BatchRow:
    return BatchRow(
        id=batch_id,
        name=name,
        kind=kind,
        spec=spec,
        status="pending",
        paused_reason=None,
        total=0,
        succeeded=0,
        failed=0,
        cancelled=0,
        input_tokens=0,
        output_tokens=0,
        cost_usd=0.0,
        error=None,
        created_at=now,
        updated_at=now,
        finished_at=None,
    )


def _item_dicts(batch_id: str, items: Iterable[NewItem], now: datetime) -> Iterator[dict[str, Any]]:
    for it in items:
        bad = it.error is not None
        yield {
            "batch_id": batch_id,
            "item": it.item,
            "input": it.input,
            "status": "failed" if bad else "pending",
            "lease_owner": None,
            "lease_expires_at": None,
            "attempts": 0,
            "run_id": None,
            "output": None,
            "error": it.error,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
            "started_at": None,
            "finished_at": now if bad else None,
        }


def _batch_record(row: BatchRow, live: BatchProgress | None) -> BatchRecord:
    return BatchRecord(
        id=row.id,
        name=row.name,
        kind=cast(BatchKind, row.kind),
        spec=dict(row.spec),
        status=cast(BatchStatus, row.status),
        paused_reason=row.paused_reason,
        total=row.total,
        succeeded=row.succeeded,
        failed=row.failed,
        cancelled=row.cancelled,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cost_usd=row.cost_usd,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        progress=live,
    )


def _item_record(row: BatchItemRow) -> BatchItemRecord:
    return BatchItemRecord(
        batch_id=row.batch_id,
        item=row.item,
        input=row.input,
        status=cast(BatchItemStatus, row.status),
        attempts=row.attempts,
        output=row.output,
        error=row.error,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cost_usd=row.cost_usd,
        run_id=row.run_id,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )
