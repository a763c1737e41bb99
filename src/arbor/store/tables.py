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
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Dialect, Double, Index, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = ["NAMING_CONVENTION", "Base", "UTCDateTime", "UsageRow"]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

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
