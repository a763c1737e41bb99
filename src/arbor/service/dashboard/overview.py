"""The overview: API traffic (requests/s, error rate, p95 latency) as sparklines, LLM
tokens and cost per day from the usage table, circuit-breaker states, and what needs a
person's attention (runs waiting for approval, agents disabled for flapping).

The page polls ``/overview/panel`` every few seconds with htmx; each poll takes a reading of
the app's own metrics registry (see :mod:`arbor.service.dashboard.charts`). The dashboard's
own requests are left out of the traffic figures.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response

from arbor.service.dashboard.charts import bars, breaker_rows, sparkline
from arbor.service.dashboard.sessions import Session
from arbor.service.dashboard.web import DashboardRoute, Viewer, dashboard_of, render
from arbor.store import AgentRepository, UsageRepository

__all__ = ["API_ROUTE_PREFIXES", "router"]

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

#: Route templates counted as API traffic (the dashboard's pages are not).
API_ROUTE_PREFIXES = ("/v1", "/healthz", "/readyz", "/metrics", "/openapi.json", "(unmatched)")
_DAYS = 14
_ATTENTION_LIMIT = 50


def _not_api(route: str) -> bool:
    return not route.startswith(API_ROUTE_PREFIXES)


@router.get("/")
async def overview(request: Request, session: Viewer) -> Response:
    return render(request, "overview.html", **await _figures(request, session))


@router.get("/overview/panel")
async def overview_panel(request: Request, session: Viewer) -> Response:
    return render(request, "_overview_panel.html", **await _figures(request, session))


async def _figures(request: Request, session: Session) -> dict[str, Any]:
    dash = dashboard_of(request)
    ctx = dash.ctx
    assert ctx.http_metrics is not None
    dash.history.record(ctx.http_metrics, _not_api)
    points = dash.history.points()
    since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since -= timedelta(days=_DAYS - 1)
    key_id = None if session.can("admin") else session.key_id
    days = await UsageRepository(ctx.db).summary("day", since=since, key_id=key_id)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    today_row = next((d for d in days if d.group == today), None)
    waiting: list[Any] = []
    if ctx.runs is not None:
        page = await ctx.runs.store.runs.list(status="waiting_approval", limit=_ATTENTION_LIMIT)
        waiting = page.runs
    agents = await AgentRepository(ctx.db).list(status="disabled_flapping")
    return {
        "rps": sparkline([p.rps for p in points]),
        "errors": sparkline([None if p.error_rate is None else p.error_rate * 100 for p in points]),
        "p95": sparkline([p.p95_ms for p in points]),
        "client_errors": next(
            (p.client_error_rate for p in reversed(points) if p.client_error_rate is not None),
            None,
        ),
        "samples": len(points),
        "tokens_by_day": bars(
            (d.group or "?", float(d.input_tokens + d.output_tokens)) for d in days
        ),
        "cost_by_day": bars((d.group or "?", d.cost_usd) for d in days),
        "tokens_total": sum(d.input_tokens + d.output_tokens for d in days),
        "cost_total": sum(d.cost_usd for d in days),
        "calls_total": sum(d.requests for d in days),
        "today": today_row,
        "days": _DAYS,
        "own_usage_only": key_id is not None,
        "breakers": breaker_rows(ctx.metrics),
        "waiting": waiting,
        "flapping": agents,
    }
