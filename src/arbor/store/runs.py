"""Workflow runs and their durability: checkpoints, idempotent outputs, resumption.

The workflow engine drives a run through this repository:

1. :meth:`RunRepository.create` a run (``pending``), then ``update(status="running")``.
2. After every node, :meth:`RunRepository.checkpoint` writes in ONE transaction the state
   keys the node changed (a delta), the node's completed side effects by idempotency key,
   its events and the run's current node. A crash leaves either all of it or none of it.
3. On resume (:meth:`RunRepository.resumable` at start-up, ``arbor run --resume``),
   :meth:`RunRepository.load_state` folds the deltas back into the state, and
   :meth:`RunRepository.get_idempotent` returns the stored result of any LLM or tool call
   that already completed, so it is never repeated.

The first checkpoint of a run should hold its whole initial state; each later one only the
top-level keys that changed (:func:`fold_deltas` replaces keys, it does not merge inside
them). Storage therefore grows with the size of the changes, linearly in the steps.

On a SQLite file the hot methods (create, get, update, checkpoint, load_state, load_run and
the idempotency records) run as direct ``sqlite3`` transactions (:mod:`arbor.store._sqlite_runs`),
one call each; the rest, and everything on PostgreSQL, go through SQLAlchemy sessions. Both
paths write the same rows and raise the same errors.

Runs are listed newest first with keyset pagination: ``next_cursor`` is an opaque string
naming the last run of a page, so pages stay consistent while new runs arrive.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, func, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from arbor.core.errors import NotFoundError, WorkflowError
from arbor.core.ids import new_id
from arbor.store import _sqlite_runs as direct_sql
from arbor.store._records import (
    RESUMABLE_STATUSES,
    TERMINAL_STATUSES,
    CheckpointRecord,
    CheckpointResult,
    IdempotentRecord,
    RunRecord,
    RunState,
    RunStatus,
    check_status,
    fold_deltas,
)
from arbor.store._util import aware, utcnow
from arbor.store.engine import Database
from arbor.store.events import NewEvent, append_events, lock_run
from arbor.store.tables import CheckpointRow, IdempotencyRow, RunRow

__all__ = [
    "RESUMABLE_STATUSES",
    "TERMINAL_STATUSES",
    "CheckpointRecord",
    "CheckpointResult",
    "IdempotentRecord",
    "RunPage",
    "RunRecord",
    "RunRepository",
    "RunState",
    "RunStatus",
    "fold_deltas",
]


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of runs, newest first; pass ``next_cursor`` back for the next page."""

    runs: list[RunRecord]
    next_cursor: str | None


class RunRepository:
    """Runs, checkpoints and idempotent outputs; each method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        workflow: str,
        input: dict[str, Any] | None = None,
        *,
        status: RunStatus = "pending",
        parent_id: str | None = None,
        thread_id: str | None = None,
        run_id: str | None = None,
        created_at: datetime | None = None,
        lease: tuple[str, datetime] | None = None,
    ) -> RunRecord:
        """A new run; ``lease`` (owner, expiry) creates it already leased to the process
        that will drive it, so no other process can take it over in between (see
        :mod:`arbor.store.run_leases`)."""
        check_status(status)
        now = aware("created_at", created_at) if created_at is not None else utcnow()
        run = RunRecord(
            id=run_id or new_id("run"),
            workflow=workflow,
            status=status,
            input=input or {},
            output=None,
            error=None,
            current_node=None,
            parent_id=parent_id,
            thread_id=thread_id,
            created_at=now,
            updated_at=now,
            finished_at=now if status in TERMINAL_STATUSES else None,
        )
        if (direct := self._db.direct) is not None:
            await direct.write(partial(direct_sql.insert_run, run=run, lease=lease))
            return run
        owner, expires = lease if lease is not None else (None, None)
        async with self._db.session() as session:
            fields = {f: getattr(run, f) for f in _RUN_FIELDS}
            session.add(RunRow(**fields, lease_owner=owner, lease_expires_at=expires))
        return run

    async def get(self, run_id: str) -> RunRecord:
        if (direct := self._db.direct) is not None:
            return await direct.read(partial(direct_sql.get_run, run_id=run_id))
        async with self._db.session() as session:
            row = await session.get(RunRow, run_id)
        if row is None:
            raise NotFoundError(f"run {run_id!r} not found")
        return _run(row)

    async def list(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        thread_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs newest first (``created_at``, then id), filtered, ``limit`` per page."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        conditions: builtins.list[ColumnElement[bool]] = []
        if status is not None:
            conditions.append(RunRow.status == check_status(status))
        if workflow is not None:
            conditions.append(RunRow.workflow == workflow)
        if thread_id is not None:
            conditions.append(RunRow.thread_id == thread_id)
        if cursor is not None:
            created_at, last_id = _decode_cursor(cursor)
            conditions.append(
                or_(
                    RunRow.created_at < created_at,
                    and_(RunRow.created_at == created_at, RunRow.id < last_id),
                )
            )
        query = (
            select(RunRow)
            .where(*conditions)
            .order_by(RunRow.created_at.desc(), RunRow.id.desc())
            .limit(limit + 1)
        )
        async with self._db.session() as session:
            rows = (await session.scalars(query)).all()
        runs = [_run(row) for row in rows[:limit]]
        more = len(rows) > limit
        return RunPage(runs, _encode_cursor(runs[-1]) if more else None)

    async def update(
        self,
        run_id: str,
        *,
        status: RunStatus | None = None,
        current_node: str | None = None,
        output: dict[str, Any] | None = None,
        error: str | None = None,
        only_from: Collection[RunStatus] | None = None,
    ) -> RunRecord:
        """Change the given fields (None leaves a field as it is); entering a terminal
        status sets ``finished_at``.

        ``only_from`` makes the change conditional on the current status (a cancel that
        must not overwrite a finished run): otherwise WorkflowError, nothing changed.
        """
        if status is not None:
            check_status(status)
        if (direct := self._db.direct) is not None:
            return await direct.write(
                partial(
                    direct_sql.update_run,
                    run_id=run_id,
                    status=status,
                    current_node=current_node,
                    output=output,
                    error=error,
                    only_from=only_from,
                )
            )
        async with self._db.session(write=True) as session:
            row = await lock_run(session, run_id)
            if only_from is not None and row.status not in only_from:
                raise WorkflowError(
                    f"run {run_id!r} is {row.status}, not one of {sorted(only_from)}",
                    run_id=run_id,
                )
            now = utcnow()
            if status is not None:
                row.status = check_status(status)
                row.finished_at = now if status in TERMINAL_STATUSES else None
            if current_node is not None:
                row.current_node = current_node
            if output is not None:
                row.output = output
            if error is not None:
                row.error = error
            row.updated_at = now
        return _run(row)

    async def delete(self, run_id: str) -> None:
        """Delete a run with its checkpoints, outputs, events and approvals."""
        async with self._db.session(write=True) as session:
            row = await lock_run(session, run_id)
            await session.delete(row)

    async def resumable(self) -> builtins.list[RunRecord]:
        """Runs a crashed or restarted process left ``pending`` or ``running``, oldest first."""
        query = (
            select(RunRow)
            .where(RunRow.status.in_(sorted(RESUMABLE_STATUSES)))
            .order_by(RunRow.created_at, RunRow.id)
        )
        async with self._db.session() as session:
            rows = (await session.scalars(query)).all()
        return [_run(row) for row in rows]

    # ---- durability ---------------------------------------------------------------------

    async def checkpoint(
        self,
        run_id: str,
        node: str,
        delta: dict[str, Any],
        *,
        outputs: Mapping[str, Any] | None = None,
        events: Sequence[NewEvent] = (),
        expected_seq: int | None = None,
    ) -> CheckpointResult:
        """Record that ``node`` finished, all in one transaction: the state ``delta``, the
        node's completed side effects ``outputs`` (idempotency key → result, kept if already
        recorded), its ``events`` and the run's current node.

        ``expected_seq`` (the ``last_seq`` the writer loaded) fences off a second writer of
        the same run: if another checkpoint landed since, WorkflowError and nothing written.
        """
        if (direct := self._db.direct) is not None:
            return await direct.write(
                partial(
                    direct_sql.checkpoint,
                    run_id=run_id,
                    node=node,
                    delta=delta,
                    outputs=outputs,
                    events=events,
                    expected_seq=expected_seq,
                )
            )
        async with self._db.session(write=True) as session:
            run = await lock_run(session, run_id)
            last = await _last_checkpoint_seq(session, run_id)
            if expected_seq is not None and last != expected_seq:
                raise WorkflowError(
                    f"run {run_id!r} is at checkpoint {last}, not {expected_seq}: "
                    "another process is running it",
                    run_id=run_id,
                )
            now = utcnow()
            row = CheckpointRow(run_id=run_id, seq=last + 1, node=node, delta=delta, created_at=now)
            session.add(row)
            await session.flush()
            if outputs:
                await _insert_outputs(session, run_id, outputs, now)
            written = await append_events(session, run_id, events)
            run.current_node = node
            run.updated_at = now
        return CheckpointResult(checkpoint=_checkpoint(row), events=written)

    async def checkpoints(
        self, run_id: str, *, after_seq: int = 0
    ) -> builtins.list[CheckpointRecord]:
        """The run's checkpoints after ``after_seq``, in order."""
        query = (
            select(CheckpointRow)
            .where(CheckpointRow.run_id == run_id, CheckpointRow.seq > after_seq)
            .order_by(CheckpointRow.seq)
        )
        async with self._db.session() as session:
            rows = (await session.scalars(query)).all()
        return [_checkpoint(row) for row in rows]

    async def load_state(self, run_id: str) -> RunState:
        """The run's state folded from all its deltas, with the last checkpoint's seq and
        node; NotFoundError for an unknown run."""
        if (direct := self._db.direct) is not None:
            return await direct.read(partial(direct_sql.load_state, run_id=run_id))
        async with self._db.session() as session:
            if await session.get(RunRow, run_id) is None:
                raise NotFoundError(f"run {run_id!r} not found")
            rows = (await session.execute(_deltas_query(run_id))).all()
        return _fold(rows)

    async def load_run(self, run_id: str) -> tuple[RunRecord, RunState]:
        """The run and its folded state (:meth:`get` and :meth:`load_state`) from one
        snapshot, as a resuming runner needs them; NotFoundError for an unknown run."""
        if (direct := self._db.direct) is not None:
            return await direct.read(partial(direct_sql.load_run, run_id=run_id))
        async with self._db.session() as session:
            row = await session.get(RunRow, run_id)
            if row is None:
                raise NotFoundError(f"run {run_id!r} not found")
            rows = (await session.execute(_deltas_query(run_id))).all()
        return _run(row), _fold(rows)

    async def get_idempotent(self, run_id: str, key: str) -> IdempotentRecord | None:
        """The stored result for ``key`` in this run, or None if that effect never completed."""
        if (direct := self._db.direct) is not None:
            return await direct.read(partial(direct_sql.get_idempotent, run_id=run_id, key=key))
        async with self._db.session() as session:
            row = await session.get(IdempotencyRow, (run_id, key))
        return None if row is None else _idempotent(row)

    async def record_idempotent(self, run_id: str, key: str, value: Any) -> IdempotentRecord:
        """Store ``value`` for ``key`` unless a value is already stored (first writer wins);
        returns the stored record, which a losing writer should use instead of its own."""
        if (direct := self._db.direct) is not None:
            return await direct.write(
                partial(direct_sql.record_idempotent, run_id=run_id, key=key, value=value)
            )
        async with self._db.session(write=True) as session:
            await _insert_outputs(session, run_id, {key: value}, utcnow())
            row = await session.get(IdempotencyRow, (run_id, key), populate_existing=True)
        assert row is not None  # inserted or already there, inside this transaction
        return _idempotent(row)


async def _insert_outputs(
    session: AsyncSession, run_id: str, outputs: Mapping[str, Any], now: datetime
) -> None:
    """Insert-or-ignore on the (run_id, key) primary key, on either database."""
    dialect = session.get_bind().dialect.name
    make = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = make(IdempotencyRow).on_conflict_do_nothing(index_elements=["run_id", "key"])
    rows = [{"run_id": run_id, "key": k, "value": v, "created_at": now} for k, v in outputs.items()]
    await session.execute(statement, rows)


def _deltas_query(run_id: str) -> Select[tuple[int, str, dict[str, Any]]]:
    return (
        select(CheckpointRow.seq, CheckpointRow.node, CheckpointRow.delta)
        .where(CheckpointRow.run_id == run_id)
        .order_by(CheckpointRow.seq)
    )


def _fold(rows: Sequence[Row[tuple[int, str, dict[str, Any]]]]) -> RunState:
    if not rows:
        return RunState(state={}, last_seq=0, node=None)
    return RunState(
        state=fold_deltas(row.delta for row in rows), last_seq=rows[-1].seq, node=rows[-1].node
    )


async def _last_checkpoint_seq(session: AsyncSession, run_id: str) -> int:
    query = select(func.coalesce(func.max(CheckpointRow.seq), 0)).where(
        CheckpointRow.run_id == run_id
    )
    return int(await session.scalar(query) or 0)


def _encode_cursor(run: RunRecord) -> str:
    raw = json.dumps([run.created_at.isoformat(), run.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, run_id = json.loads(raw)
        return aware("cursor", datetime.fromisoformat(created_at)), str(run_id)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError(f"invalid cursor {cursor!r}") from None


_RUN_FIELDS = (
    "id",
    "workflow",
    "status",
    "input",
    "output",
    "error",
    "current_node",
    "parent_id",
    "thread_id",
    "created_at",
    "updated_at",
    "finished_at",
)


def _run(row: RunRow) -> RunRecord:
    return RunRecord(
        id=row.id,
        workflow=row.workflow,
        status=check_status(row.status),
        input=row.input,
        output=row.output,
        error=row.error,
        current_node=row.current_node,
        parent_id=row.parent_id,
        thread_id=row.thread_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


def _checkpoint(row: CheckpointRow) -> CheckpointRecord:
    return CheckpointRecord(
        run_id=row.run_id, seq=row.seq, node=row.node, delta=row.delta, created_at=row.created_at
    )


def _idempotent(row: IdempotencyRow) -> IdempotentRecord:
    return IdempotentRecord(
        run_id=row.run_id, key=row.key, value=row.value, created_at=row.created_at
    )
