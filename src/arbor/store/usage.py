"""Usage records: what every LLM call consumed and cost, and who it was for.

The LLM pipeline creates a :class:`UsageRecord` per call (a plain dataclass, cheap on the
hot path) and hands batches to :class:`UsageRepository`. Budgets read
:meth:`UsageRepository.total_cost`; ``/v1/usage`` and the dashboard read
:meth:`UsageRepository.summary`.

Time windows are half-open: ``since`` inclusive, ``until`` exclusive, both aware datetimes.
Days are UTC days, reported as ``YYYY-MM-DD``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, case, func, insert, literal_column, select
from sqlalchemy.orm import InstrumentedAttribute

from arbor.core.ids import new_id
from arbor.store.engine import Database
from arbor.store.tables import UsageRow

__all__ = ["UsageGroupBy", "UsageRecord", "UsageRepository", "UsageSummaryRow"]

UsageGroupBy = Literal["key", "agent", "model", "day"]
_GROUPS: frozenset[str] = frozenset(get_args(UsageGroupBy))
_GroupColumn = ColumnElement[Any] | InstrumentedAttribute[Any]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True, kw_only=True)
class UsageRecord:
    """One accounted call: a success (``status="ok"``), a cache hit or a failure."""

    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    #: "ok", or the error kind (``ArborError.kind``) of a failed call.
    status: str = "ok"
    #: Served from Arbor's cache (no upstream call, no cost).
    cached: bool = False
    #: Tokens counted by Arbor because the provider reported none.
    estimated: bool = False
    key_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    batch_id: str | None = None
    #: The upstream response id, when there was one.
    request_id: str | None = None
    id: str = field(default_factory=lambda: new_id("use"))
    created_at: datetime = field(default_factory=_utcnow)

    def __post_init__(self) -> None:
        if self.created_at.tzinfo is None or self.created_at.utcoffset() is None:
            raise ValueError("UsageRecord.created_at must be timezone-aware")
        self.created_at = self.created_at.astimezone(UTC)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class UsageSummaryRow:
    """Totals for one group: a key id, agent id, ``provider:model`` or ``YYYY-MM-DD``.

    ``group`` is None for records without a key or agent.
    """

    group: str | None
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: float


class UsageRepository:
    """Writes and aggregates usage records; each method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, record: UsageRecord) -> None:
        await self.add_many([record])

    async def add_many(self, records: Iterable[UsageRecord]) -> None:
        """Insert all records in one transaction (all or none)."""
        rows = [_row_values(r) for r in records]
        if not rows:
            return
        async with self._db.session() as session:
            # render_nulls: one executemany for the batch, whichever fields are None
            await session.execute(insert(UsageRow).execution_options(render_nulls=True), rows)

    async def records(
        self,
        *,
        key_id: str | None = None,
        run_id: str | None = None,
        batch_id: str | None = None,
        limit: int = 100,
    ) -> list[UsageRecord]:
        """The newest records first, optionally for one key, run or batch."""
        query = (
            select(UsageRow)
            .where(*_filters(key_id=key_id, run_id=run_id, batch_id=batch_id))
            .order_by(UsageRow.created_at.desc(), UsageRow.id.desc())
            .limit(limit)
        )
        async with self._db.session() as session:
            rows = (await session.scalars(query)).all()
        return [_record(row) for row in rows]

    async def summary(
        self,
        group_by: UsageGroupBy,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        key_id: str | None = None,
    ) -> list[UsageSummaryRow]:
        """Totals per group, ordered by group (days oldest first); records without a key
        or agent come last."""
        if group_by not in _GROUPS:
            raise ValueError(f"group_by must be one of {sorted(_GROUPS)}, not {group_by!r}")
        keys = self._group_columns(group_by)
        query = (
            select(
                *keys,
                func.count().label("requests"),
                func.sum(case((UsageRow.status != "ok", 1), else_=0)).label("errors"),
                func.sum(UsageRow.input_tokens).label("input_tokens"),
                func.sum(UsageRow.output_tokens).label("output_tokens"),
                func.sum(UsageRow.cached_input_tokens).label("cached_input_tokens"),
                func.sum(UsageRow.cost_usd).label("cost_usd"),
            )
            .where(*_filters(since=since, until=until, key_id=key_id))
            .group_by(*keys)
        )
        async with self._db.session() as session:
            result = (await session.execute(query)).all()
        rows = [_summary_row(group_by, row) for row in result]
        # Sorted here: SQLite and PostgreSQL disagree on where NULLs go.
        return sorted(rows, key=lambda r: (r.group is None, r.group or ""))

    async def total_cost(
        self,
        *,
        key_id: str | None = None,
        run_id: str | None = None,
        batch_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> float:
        """Total USD spent by the matching records (all records when no filter is given)."""
        query = select(func.coalesce(func.sum(UsageRow.cost_usd), 0.0)).where(
            *_filters(key_id=key_id, run_id=run_id, batch_id=batch_id, since=since, until=until)
        )
        async with self._db.session() as session:
            total = await session.scalar(query)
        return float(total or 0.0)

    def _group_columns(self, group_by: UsageGroupBy) -> Sequence[_GroupColumn]:
        if group_by == "key":
            return [UsageRow.key_id]
        if group_by == "agent":
            return [UsageRow.agent_id]
        if group_by == "model":
            return [UsageRow.provider, UsageRow.model]
        return [self._utc_day().label("day")]

    def _utc_day(self) -> ColumnElement[str]:
        """The UTC calendar day of ``created_at`` as ``YYYY-MM-DD`` text.

        Constants are literal SQL, not parameters: PostgreSQL only matches the GROUP BY
        expression to the selected one when both are identical, and each bound parameter
        gets its own ``$n``.
        """
        if self._db.dialect == "postgresql":
            utc = func.timezone(literal_column("'UTC'"), UsageRow.created_at)
            return func.to_char(utc, literal_column("'YYYY-MM-DD'"))
        # SQLite holds UTC wall time as "YYYY-MM-DD HH:MM:SS.ffffff".
        return func.date(UsageRow.created_at)


def _filters(
    *,
    key_id: str | None = None,
    run_id: str | None = None,
    batch_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if key_id is not None:
        conditions.append(UsageRow.key_id == key_id)
    if run_id is not None:
        conditions.append(UsageRow.run_id == run_id)
    if batch_id is not None:
        conditions.append(UsageRow.batch_id == batch_id)
    if since is not None:
        conditions.append(UsageRow.created_at >= _aware("since", since))
    if until is not None:
        conditions.append(UsageRow.created_at < _aware("until", until))
    return conditions


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, not {value.isoformat()}")
    return value


#: Record fields; the same names as the columns of ``usage_records`` (a test holds them equal).
_FIELDS = tuple(f.name for f in fields(UsageRecord))


def _row_values(record: UsageRecord) -> dict[str, Any]:
    """Insert parameters (the executemany form of ``insert``), not a data model."""
    return {name: getattr(record, name) for name in _FIELDS}


def _record(row: UsageRow) -> UsageRecord:
    return UsageRecord(**{name: getattr(row, name) for name in _FIELDS})


def _summary_row(group_by: UsageGroupBy, row: Any) -> UsageSummaryRow:
    if group_by == "model":
        group: str | None = f"{row.provider}:{row.model}"
    elif group_by == "day":
        group = str(row.day)
    else:
        group = row[0]
    return UsageSummaryRow(
        group=group,
        requests=int(row.requests),
        errors=int(row.errors or 0),
        input_tokens=int(row.input_tokens or 0),
        output_tokens=int(row.output_tokens or 0),
        cached_input_tokens=int(row.cached_input_tokens or 0),
        cost_usd=float(row.cost_usd or 0.0),
    )
