"""The typed records the run and event repositories hand out, shared by their two write
paths (SQLAlchemy sessions and direct SQLite transactions) so neither imports the other."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from arbor.core.ids import new_id
from arbor.store.tables import RUN_STATUSES

__all__ = [
    "RESUMABLE_STATUSES",
    "TERMINAL_STATUSES",
    "CheckpointRecord",
    "CheckpointResult",
    "EventRecord",
    "IdempotentRecord",
    "NewEvent",
    "RunRecord",
    "RunState",
    "RunStatus",
    "check_status",
    "fold_deltas",
    "number_events",
]

RunStatus = Literal["pending", "running", "waiting_approval", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[RunStatus] = frozenset({"succeeded", "failed", "cancelled"})
#: Runs a restarted process should pick up again.
RESUMABLE_STATUSES: frozenset[RunStatus] = frozenset({"pending", "running"})


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An event to append; the store assigns its id, ``seq`` and time."""

    type: str
    node: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    id: str
    run_id: str
    seq: int
    type: str
    node: str | None
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    id: str
    workflow: str
    status: RunStatus
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: str | None
    current_node: str | None
    parent_id: str | None
    thread_id: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointRecord:
    run_id: str
    seq: int
    node: str
    #: Only the top-level state keys this node changed.
    delta: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointResult:
    """What one :meth:`RunRepository.checkpoint` transaction wrote."""

    checkpoint: CheckpointRecord
    events: list[EventRecord]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunState:
    """A run's state folded from its checkpoints; ``last_seq`` 0 and ``node`` None when the
    run has none yet."""

    state: dict[str, Any]
    last_seq: int
    node: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotentRecord:
    """The stored result of a completed side effect (an LLM call, a tool call)."""

    run_id: str
    key: str
    value: Any
    created_at: datetime


def number_events(
    run_id: str, events: Sequence[NewEvent], start: int, now: datetime
) -> list[EventRecord]:
    """``events`` as the records to insert, ``seq`` from ``start`` (the run's next one, read
    under its lock): both write paths, SQLAlchemy and direct SQLite, number them this way."""
    return [
        EventRecord(
            id=new_id("evt"),
            run_id=run_id,
            seq=start + i,
            type=e.type,
            node=e.node,
            data=e.data,
            created_at=now,
        )
        for i, e in enumerate(events)
    ]


def fold_deltas(deltas: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The state the deltas build, in order: later keys replace earlier ones."""
    state: dict[str, Any] = {}
    for delta in deltas:
        state.update(delta)
    return state


def check_status(status: str) -> RunStatus:
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {list(RUN_STATUSES)}, not {status!r}")
    return status  # type: ignore[return-value]
