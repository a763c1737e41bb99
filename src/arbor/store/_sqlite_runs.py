"""Runs, checkpoints, idempotent outputs and events as direct SQLite transactions (see
:mod:`arbor.store._sqlite_direct`): each public function is the body of one transaction.

Values are stored exactly as the SQLAlchemy tables store them on SQLite, so either path
reads what the other wrote: timestamps as UTC wall time ``YYYY-MM-DD HH:MM:SS.ffffff``
(:class:`~arbor.store.tables.UTCDateTime`), JSON documents as ``json.dumps`` text, a
nullable JSON ``None`` as SQL NULL.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import StatementError

from arbor.core.errors import NotFoundError, WorkflowError
from arbor.store._records import (
    TERMINAL_STATUSES,
    CheckpointRecord,
    CheckpointResult,
    EventRecord,
    IdempotentRecord,
    NewEvent,
    RunRecord,
    RunState,
    RunStatus,
    check_status,
    fold_deltas,
    number_events,
)
from arbor.store._util import utcnow

__all__ = [
    "append_events",
    "checkpoint",
    "get_idempotent",
    "get_run",
    "insert_run",
    "load_run",
    "load_state",
    "record_idempotent",
    "update_run",
]

_RUN_COLUMNS = (
    "id, workflow, status, input, output, error, current_node, parent_id, thread_id, "
    "created_at, updated_at, finished_at"
)
_INSERT_RUN = (
    f"INSERT INTO runs ({_RUN_COLUMNS}, lease_owner, lease_expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_RUN = f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?"
_UPDATE_RUN = (
    "UPDATE runs SET status = ?, output = ?, error = ?, current_node = ?, updated_at = ?, "
    "finished_at = ? WHERE id = ?"
)
_TOUCH_RUN = "UPDATE runs SET current_node = ?, updated_at = ? WHERE id = ?"
_RUN_EXISTS = "SELECT 1 FROM runs WHERE id = ?"
# One statement for what a checkpoint must know first: does the run exist, and the last seq
# of its checkpoints and of its events (each statement is a few microseconds of the budget).
_CHECKPOINT_POSITION = (
    "SELECT (SELECT 1 FROM runs WHERE id = ?), "
    "(SELECT coalesce(max(seq), 0) FROM checkpoints WHERE run_id = ?), "
    "(SELECT coalesce(max(seq), 0) FROM events WHERE run_id = ?)"
)
_INSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (run_id, seq, node, delta, created_at) VALUES (?, ?, ?, ?, ?)"
)
_SELECT_DELTAS = "SELECT seq, node, delta FROM checkpoints WHERE run_id = ? ORDER BY seq"
_INSERT_OUTPUT = (
    "INSERT INTO idempotency_records (run_id, key, value, created_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (run_id, key) DO NOTHING"
)
_SELECT_OUTPUT = "SELECT value, created_at FROM idempotency_records WHERE run_id = ? AND key = ?"
_EVENT_POSITION = (
    "SELECT (SELECT 1 FROM runs WHERE id = ?), "
    "(SELECT coalesce(max(seq), 0) FROM events WHERE run_id = ?)"
)
_INSERT_EVENT = (
    "INSERT INTO events (id, run_id, seq, type, node, data, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


# ---- runs ----------------------------------------------------------------------------------


def insert_run(
    conn: sqlite3.Connection, run: RunRecord, lease: tuple[str, datetime] | None = None
) -> None:
    """The run, leased to ``lease`` (owner, expiry) when given."""
    owner, expires = lease if lease is not None else (None, None)
    conn.execute(
        _INSERT_RUN,
        (
            run.id,
            run.workflow,
            run.status,
            _json(run.input, _INSERT_RUN),
            _nullable_json(run.output, _INSERT_RUN),
            run.error,
            run.current_node,
            run.parent_id,
            run.thread_id,
            _ts(run.created_at),
            _ts(run.updated_at),
            None if run.finished_at is None else _ts(run.finished_at),
            owner,
            None if expires is None else _ts(expires),
        ),
    )


def get_run(conn: sqlite3.Connection, run_id: str) -> RunRecord:
    row = conn.execute(_SELECT_RUN, (run_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"run {run_id!r} not found")
    return RunRecord(
        id=row[0],
        workflow=row[1],
        status=check_status(row[2]),
        input=_load(row[3]),
        output=None if row[4] is None else _load(row[4]),
        error=row[5],
        current_node=row[6],
        parent_id=row[7],
        thread_id=row[8],
        created_at=_dt(row[9]),
        updated_at=_dt(row[10]),
        finished_at=None if row[11] is None else _dt(row[11]),
    )


def update_run(
    conn: sqlite3.Connection,
    run_id: str,
    *,
    status: RunStatus | None,
    current_node: str | None,
    output: dict[str, Any] | None,
    error: str | None,
    only_from: Collection[RunStatus] | None,
) -> RunRecord:
    """The fields given changed (see :meth:`RunRepository.update`); needs the write lock."""
    run = get_run(conn, run_id)
    if only_from is not None and run.status not in only_from:
        raise WorkflowError(
            f"run {run_id!r} is {run.status}, not one of {sorted(only_from)}", run_id=run_id
        )
    now = utcnow()
    finished_at = run.finished_at
    if status is not None:
        finished_at = now if status in TERMINAL_STATUSES else None
    new = RunRecord(
        id=run.id,
        workflow=run.workflow,
        status=run.status if status is None else status,
        input=run.input,
        output=run.output if output is None else output,
        error=run.error if error is None else error,
        current_node=run.current_node if current_node is None else current_node,
        parent_id=run.parent_id,
        thread_id=run.thread_id,
        created_at=run.created_at,
        updated_at=now,
        finished_at=finished_at,
    )
    conn.execute(
        _UPDATE_RUN,
        (
            new.status,
            _nullable_json(new.output, _UPDATE_RUN),
            new.error,
            new.current_node,
            _ts(now),
            None if finished_at is None else _ts(finished_at),
            run_id,
        ),
    )
    return new


def load_state(conn: sqlite3.Connection, run_id: str) -> RunState:
    if conn.execute(_RUN_EXISTS, (run_id,)).fetchone() is None:
        raise NotFoundError(f"run {run_id!r} not found")
    return _fold(conn, run_id)


def load_run(conn: sqlite3.Connection, run_id: str) -> tuple[RunRecord, RunState]:
    """The run and its folded state from one snapshot."""
    return get_run(conn, run_id), _fold(conn, run_id)


def _fold(conn: sqlite3.Connection, run_id: str) -> RunState:
    rows = conn.execute(_SELECT_DELTAS, (run_id,)).fetchall()
    if not rows:
        return RunState(state={}, last_seq=0, node=None)
    state = fold_deltas(_load(row[2]) for row in rows)
    return RunState(state=state, last_seq=rows[-1][0], node=rows[-1][1])


# ---- durability ----------------------------------------------------------------------------


def checkpoint(
    conn: sqlite3.Connection,
    run_id: str,
    node: str,
    delta: dict[str, Any],
    *,
    outputs: Mapping[str, Any] | None,
    events: Sequence[NewEvent],
    expected_seq: int | None,
) -> CheckpointResult:
    """One node's checkpoint (see :meth:`RunRepository.checkpoint`); needs the write lock."""
    delta_json = _json(delta, _INSERT_CHECKPOINT)
    now = utcnow()
    stamp = _ts(now)
    output_rows = [
        (run_id, key, _json(value, _INSERT_OUTPUT), stamp) for key, value in (outputs or {}).items()
    ]
    exists, last, last_event = conn.execute(_CHECKPOINT_POSITION, (run_id,) * 3).fetchone()
    if exists is None:
        raise NotFoundError(f"run {run_id!r} not found")
    if expected_seq is not None and last != expected_seq:
        raise WorkflowError(
            f"run {run_id!r} is at checkpoint {last}, not {expected_seq}: "
            "another process is running it",
            run_id=run_id,
        )
    conn.execute(_TOUCH_RUN, (node, stamp, run_id))
    conn.execute(_INSERT_CHECKPOINT, (run_id, last + 1, node, delta_json, stamp))
    if output_rows:
        conn.executemany(_INSERT_OUTPUT, output_rows)
    written = _insert_events(conn, run_id, events, last_event + 1, now)
    record = CheckpointRecord(run_id=run_id, seq=last + 1, node=node, delta=delta, created_at=now)
    return CheckpointResult(checkpoint=record, events=written)


def get_idempotent(conn: sqlite3.Connection, run_id: str, key: str) -> IdempotentRecord | None:
    row = conn.execute(_SELECT_OUTPUT, (run_id, key)).fetchone()
    if row is None:
        return None
    value, created_at = row
    return IdempotentRecord(run_id=run_id, key=key, value=_load(value), created_at=_dt(created_at))


def record_idempotent(
    conn: sqlite3.Connection, run_id: str, key: str, value: Any
) -> IdempotentRecord:
    """Insert-or-ignore, then the stored record (the first writer's); needs the write lock."""
    conn.execute(_INSERT_OUTPUT, (run_id, key, _json(value, _INSERT_OUTPUT), _ts(utcnow())))
    stored = get_idempotent(conn, run_id, key)
    assert stored is not None  # inserted or already there, inside this transaction
    return stored


def append_events(
    conn: sqlite3.Connection, run_id: str, events: Sequence[NewEvent]
) -> list[EventRecord]:
    """Events with the run's next consecutive ``seq`` numbers; needs the write lock."""
    exists, last_event = conn.execute(_EVENT_POSITION, (run_id, run_id)).fetchone()
    if exists is None:
        raise NotFoundError(f"run {run_id!r} not found")
    return _insert_events(conn, run_id, events, last_event + 1, utcnow())


def _insert_events(
    conn: sqlite3.Connection, run_id: str, events: Sequence[NewEvent], start: int, now: datetime
) -> list[EventRecord]:
    """``events`` numbered from ``start``, the run's next seq (read under the write lock)."""
    if not events:
        return []
    stamp = _ts(now)
    payloads = [_json(e.data, _INSERT_EVENT) for e in events]
    records = number_events(run_id, events, start, now)
    rows = [
        (r.id, run_id, r.seq, r.type, r.node, payload, stamp)
        for r, payload in zip(records, payloads, strict=True)
    ]
    conn.executemany(_INSERT_EVENT, rows)
    return records


# ---- values as the tables store them ------------------------------------------------------


def _ts(value: datetime) -> str:
    """UTC wall time with microseconds, as SQLAlchemy's SQLite DATETIME writes it."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _json(value: Any, statement: str) -> str:
    """``value`` as JSON text; a value JSON cannot hold fails like it does in a session."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise StatementError(str(exc), statement, None, exc) from exc


def _load(stored: str | float) -> Any:
    """A stored JSON document. The column's NUMERIC affinity keeps a bare number as a
    number rather than text (``json.dumps(3)`` is stored as the integer 3)."""
    return json.loads(stored) if isinstance(stored, str) else stored


def _nullable_json(value: Any, statement: str) -> str | None:
    return None if value is None else _json(value, statement)
