"""The relational schema: SQLAlchemy declarative tables, one migration per change.

Every table here has a migration in ``migrations/versions``; a test autogenerates the diff
between this metadata and a migrated database and requires it to be empty. Constraint and
index names come from :data:`NAMING_CONVENTION`, so migrations can refer to them by name on
both SQLite and PostgreSQL.

Type choices that hold for both databases:

- Timestamps are :class:`UTCDateTime`: timezone-aware UTC in Python, ``timestamptz`` on
  PostgreSQL, and a fixed-width UTC text on SQLite (so string order is time order).
- Money is ``Double`` (IEEE 754 float64: ``double precision``, SQLite ``REAL``). A Python
  float is stored and read back bit for bit; sums are float sums (relative error around
  1e-15, far below a cent on any budget). ``Numeric`` would buy decimal sums at the price of
  ``Decimal`` objects in every caller and SQLite's lossy emulation of it.
- JSON payloads are :data:`JSONDocument`: ``JSON`` on SQLite, ``JSONB`` on PostgreSQL.
  Nullable payload columns use ``none_as_null`` so Python ``None`` is SQL ``NULL``.
- Closed sets of states (run, agent, approval status) are plain strings guarded by a CHECK
  constraint; the Python side spells them as ``Literal`` types in the repositories.

The agents/workflow tables (``agents``, ``runs``, ``checkpoints``, ``idempotency_records``,
``events``, ``approvals``) are the durability layer of a workflow run: a checkpoint holds
only the state keys a node changed (a delta), so storage grows linearly with steps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "AGENT_STATUSES",
    "APPROVAL_STATUSES",
    "BATCH_ITEM_STATUSES",
    "BATCH_KINDS",
    "BATCH_STATUSES",
    "NAMING_CONVENTION",
    "RUN_STATUSES",
    "AgentRow",
    "ApiKeyRow",
    "ApprovalRow",
    "Base",
    "BatchItemRow",
    "BatchRow",
    "CheckpointRow",
    "EventRow",
    "IdempotencyRow",
    "JSONDocument",
    "NullableJSONDocument",
    "RunRow",
    "UTCDateTime",
    "UsageRow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

AGENT_STATUSES = ("enabled", "disabled", "disabled_flapping")
RUN_STATUSES = ("pending", "running", "waiting_approval", "succeeded", "failed", "cancelled")
APPROVAL_STATUSES = ("pending", "approved", "rejected")
BATCH_KINDS = ("template", "agent", "workflow")
BATCH_STATUSES = ("pending", "running", "paused", "succeeded", "failed", "cancelled")
BATCH_ITEM_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")

#: A JSON document: ``JSON`` on SQLite, ``JSONB`` on PostgreSQL (smaller, indexable).
JSONDocument: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")
#: The same for nullable columns: Python ``None`` is stored as SQL ``NULL``.
NullableJSONDocument: TypeEngine[Any] = JSON(none_as_null=True).with_variant(
    JSONB(none_as_null=True), "postgresql"
)

#: Length of Arbor's own ids (``use_`` + 22 characters today), with room to grow.
ID_LENGTH = 64


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC ``datetime`` in and out; naive values are refused, not guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        # SQLite stores text without an offset: store UTC wall time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UsageRow(Base):
    """One LLM call (or cache hit, or failure) as accounted: tokens, cost, who it was for."""

    __tablename__ = "usage_records"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    provider: Mapped[str] = mapped_column(String)
    model: Mapped[str] = mapped_column(String)
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    cached_input_tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Double)
    latency_ms: Mapped[float] = mapped_column(Double)
    #: "ok", or the error kind (``ArborError.kind``) of a failed call.
    status: Mapped[str] = mapped_column(String)
    cached: Mapped[bool]
    estimated: Mapped[bool]
    key_id: Mapped[str | None] = mapped_column(String)
    agent_id: Mapped[str | None] = mapped_column(String, index=True)
    run_id: Mapped[str | None] = mapped_column(String, index=True)
    batch_id: Mapped[str | None] = mapped_column(String, index=True)
    #: The upstream response id, when there was one.
    request_id: Mapped[str | None] = mapped_column(String)

    __table_args__ = (
        # Budgets and /v1/usage ask "this key, since then".
        Index(None, "key_id", "created_at"),
    )


def _one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=column)


def _run_fk() -> ForeignKey:
    return ForeignKey("runs.id", ondelete="CASCADE")


class AgentRow(Base):
    """A stored agent definition and its supervision state."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    #: Role, instructions, model, tools, memory policy, output type: the agents layer's schema.
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    status: Mapped[str] = mapped_column(String)
    #: ISO timestamps of recent failures, oldest first, pruned to the flap window.
    failures: Mapped[list[str]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (_one_of("status", AGENT_STATUSES),)


class RunRow(Base):
    """One workflow run: its lifecycle, input, outcome and where it is."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    workflow: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    input: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    output: Mapped[dict[str, Any] | None] = mapped_column(NullableJSONDocument)
    error: Mapped[str | None] = mapped_column(Text)
    current_node: Mapped[str | None] = mapped_column(String)
    parent_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), index=True)
    thread_id: Mapped[str | None] = mapped_column(String, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The process driving the run and until when its lease holds (see RunRepository.lease).
    lease_owner: Mapped[str | None] = mapped_column(String)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        _one_of("status", RUN_STATUSES),
        # Keyset pagination, newest first, unfiltered and by each list filter.
        Index(None, "created_at", "id"),
        Index(None, "status", "created_at", "id"),
        Index(None, "workflow", "created_at", "id"),
    )


class CheckpointRow(Base):
    """The state keys one node changed (a delta); folding them in ``seq`` order is the state."""

    __tablename__ = "checkpoints"

    run_id: Mapped[str] = mapped_column(String(ID_LENGTH), _run_fk(), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    node: Mapped[str] = mapped_column(String)
    delta: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IdempotencyRow(Base):
    """A completed side effect (LLM call, tool call) of a run, by idempotency key."""

    __tablename__ = "idempotency_records"

    run_id: Mapped[str] = mapped_column(String(ID_LENGTH), _run_fk(), primary_key=True)
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[Any] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EventRow(Base):
    """One event of a run; ``seq`` counts from 1 per run with no gaps (SSE's event id)."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH), _run_fk())
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String)
    node: Mapped[str | None] = mapped_column(String)
    data: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    # The unique constraint's index serves replay: WHERE run_id = ? AND seq > ? ORDER BY seq.
    __table_args__ = (UniqueConstraint("run_id", "seq"),)


class ApprovalRow(Base):
    """A human decision a paused run waits for."""

    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH), _run_fk(), index=True)
    node: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    decided_by: Mapped[str | None] = mapped_column(String)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (_one_of("status", APPROVAL_STATUSES), Index(None, "status", "created_at"))


class ApiKeyRow(Base):
    """An API key of the service: only a SHA-256 of the key is kept, never the key itself.

    ``prefix`` is a non-secret handle printed in the key (``arb_<prefix>_<secret>``), so a
    request finds its row by an indexed equality and then compares hashes in constant time.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    #: Granted scopes ("read", "run", "admin"); a wider scope implies the narrower ones.
    scopes: Mapped[list[str]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    budget_usd: Mapped[float | None] = mapped_column(Double)

    # Lists are newest first.
    __table_args__ = (Index(None, "created_at", "id"),)


class BatchRow(Base):
    """A batch: a dataset run through a template, agent or workflow, with its options and totals.

    The totals are a snapshot refreshed by the executor; the item rows are the truth.
    """

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    #: Template text / agent name / workflow name, model and options (runtime's BatchSpec).
    spec: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    status: Mapped[str] = mapped_column(String)
    #: Why a paused batch is paused ("budget", "user").
    paused_reason: Mapped[str | None] = mapped_column(String)
    total: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    cancelled: Mapped[int] = mapped_column(Integer)
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Double)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        _one_of("kind", BATCH_KINDS),
        _one_of("status", BATCH_STATUSES),
        Index(None, "created_at", "id"),
        Index(None, "status", "created_at", "id"),
    )


class BatchItemRow(Base):
    """One dataset row of a batch; the primary key makes one result per item a constraint.

    ``lease_owner``/``lease_expires_at`` say which executor holds a running item until when;
    a result is written only by the current lease holder.
    """

    __tablename__ = "batch_items"

    batch_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    item: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: The row as parsed; NULL when the row was malformed (``error`` says why).
    input: Mapped[Any] = mapped_column(NullableJSONDocument, nullable=True)
    status: Mapped[str] = mapped_column(String)
    lease_owner: Mapped[str | None] = mapped_column(String)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer)
    #: The durable workflow run of a workflow batch's item.
    run_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    output: Mapped[Any] = mapped_column(NullableJSONDocument, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Double)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        _one_of("status", BATCH_ITEM_STATUSES),
        # Claiming: the next pending items in order, and expired leases of running ones.
        Index(None, "batch_id", "status", "item"),
        Index(None, "batch_id", "status", "lease_expires_at"),
    )
