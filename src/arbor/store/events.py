"""Run events: typed by name, numbered 1, 2, 3… per run, persisted, replayable.

``seq`` is the event id a client sends back as SSE ``Last-Event-ID``: ``list(run_id,
after_seq=n)`` returns exactly what it missed. Numbers are dense (no gaps) and assigned
inside the writing transaction while it holds the run's row lock (``SELECT … FOR UPDATE``
on PostgreSQL, the database write lock on SQLite), so concurrent writers to one run queue
instead of colliding; the ``(run_id, seq)`` unique constraint is the guard, and a
transaction that still loses is retried. On a SQLite file appends are direct ``sqlite3``
transactions (:mod:`arbor.store._sqlite_runs`) under ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from functools import partial
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from arbor.core.errors import NotFoundError
from arbor.store import _sqlite_runs as direct_sql
from arbor.store._records import EventRecord, NewEvent, number_events
from arbor.store._util import utcnow
from arbor.store.engine import Database
from arbor.store.tables import EventRow, RunRow

__all__ = ["EventRecord", "EventRepository", "NewEvent", "append_events", "lock_run"]

#: Attempts of a transaction that lost a sequence-number race before giving up.
MAX_ATTEMPTS = 5


class EventRepository:
    """Appends and replays a run's events; each method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(
        self, run_id: str, type: str, *, node: str | None = None, data: dict[str, Any] | None = None
    ) -> EventRecord:
        """Append one event with the run's next ``seq``."""
        (event,) = await self.append_many(run_id, [NewEvent(type=type, node=node, data=data or {})])
        return event

    async def append_many(
        self, run_id: str, events: Sequence[NewEvent]
    ) -> builtins.list[EventRecord]:
        """Append events with consecutive ``seq`` numbers, all or none."""
        if (direct := self._db.direct) is not None:  # holds the write lock: no race to lose
            append = partial(direct_sql.append_events, run_id=run_id, events=events)
            return await direct.write(append)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self._db.session(write=True) as session:
                    await lock_run(session, run_id)
                    return await append_events(session, run_id, events)
            except IntegrityError:
                if attempt == MAX_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def list(
        self, run_id: str, *, after_seq: int = 0, limit: int = 1000
    ) -> builtins.list[EventRecord]:
        """Events with ``seq > after_seq`` in order, at most ``limit`` of them."""
        query = (
            select(EventRow)
            .where(EventRow.run_id == run_id, EventRow.seq > after_seq)
            .order_by(EventRow.seq)
            .limit(limit)
        )
        async with self._db.session() as session:
            rows = (await session.scalars(query)).all()
        return [_record(row) for row in rows]

    async def last_seq(self, run_id: str) -> int:
        """The newest event's ``seq``, 0 when the run has none."""
        async with self._db.session() as session:
            return await _max_seq(session, run_id)


async def lock_run(session: AsyncSession, run_id: str) -> RunRow:
    """The run's row, locked for the rest of the transaction; NotFoundError if missing."""
    row = await session.get(RunRow, run_id, with_for_update=True)
    if row is None:
        raise NotFoundError(f"run {run_id!r} not found")
    return row


async def append_events(
    session: AsyncSession, run_id: str, events: Sequence[NewEvent]
) -> builtins.list[EventRecord]:
    """Insert ``events`` in the caller's transaction, which must hold :func:`lock_run`."""
    if not events:
        return []
    start = await _max_seq(session, run_id) + 1
    now = utcnow()
    records = number_events(run_id, events, start, now)
    values = [
        {
            "id": r.id,
            "run_id": r.run_id,
            "seq": r.seq,
            "type": r.type,
            "node": r.node,
            "data": r.data,
            "created_at": r.created_at,
        }
        for r in records
    ]
    await session.execute(insert(EventRow).execution_options(render_nulls=True), values)
    return records


async def _max_seq(session: AsyncSession, run_id: str) -> int:
    query = select(func.coalesce(func.max(EventRow.seq), 0)).where(EventRow.run_id == run_id)
    return int(await session.scalar(query) or 0)


def _record(row: EventRow) -> EventRecord:
    return EventRecord(
        id=row.id,
        run_id=row.run_id,
        seq=row.seq,
        type=row.type,
        node=row.node,
        data=row.data,
        created_at=row.created_at,
    )
