"""``/v1/usage``: what LLM calls consumed and cost, totalled per API key, agent, model or UTC
day over a date range, from the usage records the LLM layer writes.

A key without the ``admin`` scope sees only its own usage; an admin sees everyone's and may
narrow to one key with ``key_id``. ``since``/``until`` take a date (a whole UTC day, both ends
included) or an ISO datetime (``since`` included, ``until`` excluded; no zone means UTC).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from arbor.core.errors import InvalidRequestError
from arbor.service.deps import Ctx, KeyFirstRoute, ReadKey
from arbor.service.errors import ForbiddenError
from arbor.store import UsageGroupBy, UsageRepository, UsageSummaryRow

__all__ = ["UsageGroup", "UsagePublic", "UsageTotals", "readable_key", "router"]

router = APIRouter(prefix="/v1/usage", tags=["usage"], route_class=KeyFirstRoute)


class UsageTotals(BaseModel):
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: float

    @classmethod
    def of(cls, rows: Sequence[UsageSummaryRow]) -> UsageTotals:
        """The sum of ``rows`` (the cost rounded clear of float noise)."""
        return cls(
            requests=sum(r.requests for r in rows),
            errors=sum(r.errors for r in rows),
            input_tokens=sum(r.input_tokens for r in rows),
            output_tokens=sum(r.output_tokens for r in rows),
            cached_input_tokens=sum(r.cached_input_tokens for r in rows),
            cost_usd=round(sum(r.cost_usd for r in rows), 10),
        )


class UsageGroup(UsageTotals):
    #: A key id, agent id, ``provider:model`` or ``YYYY-MM-DD``; null for calls made
    #: without a key or agent.
    group: str | None


class UsagePublic(BaseModel):
    group_by: UsageGroupBy
    since: datetime | None
    until: datetime | None
    key_id: str | None
    groups: list[UsageGroup]
    totals: UsageTotals


@router.get("")
async def get_usage(
    ctx: Ctx,
    key: ReadKey,
    group_by: UsageGroupBy = "day",
    since: Annotated[str | None, Query(max_length=40, examples=["2026-11-01"])] = None,
    until: Annotated[str | None, Query(max_length=40, examples=["2026-11-30"])] = None,
    key_id: Annotated[str | None, Query(max_length=100)] = None,
) -> UsagePublic:
    """Totals per group over the range (all time without one), ordered by group."""
    start = _bound("since", since, end=False)
    stop = _bound("until", until, end=True)
    if start is not None and stop is not None and start >= stop:
        raise InvalidRequestError("since: must be before until")
    key_id = readable_key(key_id, own=key.key_id, admin=key.is_admin)
    rows = await UsageRepository(ctx.db).summary(group_by, since=start, until=stop, key_id=key_id)
    return UsagePublic(
        group_by=group_by,
        since=start,
        until=stop,
        key_id=key_id,
        groups=[UsageGroup.model_validate(r, from_attributes=True) for r in rows],
        totals=UsageTotals.of(rows),
    )


def readable_key(key_id: str | None, *, own: str, admin: bool) -> str | None:
    """The key whose usage a caller may read: the one asked for (None: every key) for an
    admin; its own for anyone else, who may not ask for another's."""
    if admin:
        return key_id
    if key_id is not None and key_id != own:
        raise ForbiddenError("only an admin key may read another key's usage")
    return own


def _bound(name: str, raw: str | None, *, end: bool) -> datetime | None:
    """A query bound as an aware datetime: a date is its day's start (``since``) or the next
    day's start (``until``, so the day is included)."""
    if raw is None:
        return None
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            if end:
                day += timedelta(days=1)
            return datetime.combine(day, time(), tzinfo=UTC)
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequestError(
            f"{name}: expected a date (YYYY-MM-DD) or an ISO 8601 datetime"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
