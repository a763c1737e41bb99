"""Usage: what LLM calls consumed and cost, per API key, agent, model or UTC day, over a date
range, from the usage table the LLM layer writes (the same figures as ``/v1/usage``).

A session whose key is not admin sees only that key's usage. Keys and agents are shown by
name next to their ids.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from arbor.core.errors import InvalidRequestError
from arbor.service.dashboard.charts import bars
from arbor.service.dashboard.web import DashboardRoute, Viewer, dashboard_of, render
from arbor.service.routes.usage import UsageTotals, readable_key
from arbor.store import AgentRepository, UsageGroupBy, UsageRepository

__all__ = ["router"]

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

_GROUPS: tuple[UsageGroupBy, ...] = ("day", "key", "agent", "model")


@router.get("/usage")
async def usage(
    request: Request,
    session: Viewer,
    group_by: Annotated[str, Query(max_length=10)] = "day",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    key_id: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    if group_by not in _GROUPS:
        raise InvalidRequestError(f"group_by: must be one of {', '.join(_GROUPS)}")
    start = _day("since", since)
    stop = _day("until", until)
    if start is not None and stop is not None and start > stop:
        raise InvalidRequestError("since: must not be after until")
    only = readable_key(key_id or None, own=session.key_id, admin=session.can("admin"))
    ctx = dashboard_of(request).ctx
    rows = await UsageRepository(ctx.db).summary(
        group_by,
        since=datetime.combine(start, time(), tzinfo=UTC) if start else None,
        until=datetime.combine(stop + timedelta(days=1), time(), tzinfo=UTC) if stop else None,
        key_id=only,
    )
    names = await _names(request, group_by, session.can("admin"))
    labelled = [(r, names.get(r.group or "", "")) for r in rows]
    label = {r.group: (f"{n} ({r.group})" if n else (r.group or "(none)")) for r, n in labelled}
    return render(
        request,
        "usage.html",
        rows=labelled,
        groups=_GROUPS,
        group_by=group_by,
        since=since,
        until=until,
        key_id=only or "",
        token_bars=bars((label[r.group], float(r.input_tokens + r.output_tokens)) for r in rows),
        cost_bars=bars((label[r.group], r.cost_usd) for r in rows),
        totals=UsageTotals.of(rows),
    )


def _day(name: str, raw: str) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequestError(f"{name}: expected a date (YYYY-MM-DD)") from None


async def _names(request: Request, group_by: str, admin: bool) -> dict[str, str]:
    """Display names for key and agent ids (keys only for an admin)."""
    ctx = dashboard_of(request).ctx
    if group_by == "key" and admin:
        return {k.id: k.name for k in await ctx.keys.list() if k.name}
    if group_by == "agent":
        return {a.id: a.name for a in await AgentRepository(ctx.db).list()}
    return {}
