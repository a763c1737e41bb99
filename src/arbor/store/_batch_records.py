"""Plain records of the batch tables, as the repository hands them out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "BATCH_ACTIVE",
    "BATCH_RUNNABLE",
    "BatchItemRecord",
    "BatchItemStatus",
    "BatchKind",
    "BatchProgress",
    "BatchRecord",
    "BatchStatus",
    "ClaimedItem",
    "NewItem",
]

BatchKind = Literal["template", "agent", "workflow"]
BatchStatus = Literal["pending", "running", "paused", "succeeded", "failed", "cancelled"]
BatchItemStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]
#: Batch statuses that may still change by running items.
BATCH_ACTIVE: tuple[BatchStatus, ...] = ("pending", "running", "paused")
#: What an executor may start or go on with: a paused batch waits for a resume (which makes
#: it pending), so an executor starting late never undoes a pause.
BATCH_RUNNABLE: tuple[BatchStatus, ...] = ("pending", "running")


@dataclass(frozen=True, slots=True)
class NewItem:
    """One dataset row: its parsed ``input``, or ``error`` saying why it is malformed
    (the item is then stored as failed and never run)."""

    item: int
    input: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimedItem:
    """An item this executor now holds a lease on; ``attempts`` counts this claim."""

    item: int
    input: Any
    attempts: int
    run_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchProgress:
    """Item counts by status and the usage of finished items, read from the item rows."""

    total: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def done(self) -> int:
        """Items that reached a terminal status."""
        return self.succeeded + self.failed + self.cancelled

    @property
    def remaining(self) -> int:
        return self.pending + self.running


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchRecord:
    id: str
    name: str
    kind: BatchKind
    spec: dict[str, Any]
    status: BatchStatus
    paused_reason: str | None
    total: int
    succeeded: int
    failed: int
    cancelled: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    #: Live counts when the record was read with them (``BatchRepository.get(progress=True)``).
    progress: BatchProgress | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchItemRecord:
    batch_id: str
    item: int
    input: Any
    status: BatchItemStatus
    attempts: int
    output: Any
    error: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    run_id: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
