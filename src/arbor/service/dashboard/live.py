"""A run as a person watches it: the status block (status, per-node progress, pending
approvals with their buttons, output or error) and the event timeline, rendered on the
server and pushed over Server-Sent Events as the run goes.

The stream sends the current ``run-status`` block as it connects, each event as a
``run-event`` (an HTML row htmx appends to the timeline, ``id`` = the event's seq so a
reconnecting browser resumes with ``Last-Event-ID``), a fresh ``run-status`` block after
every event that can change it, and ``run-end`` once the run
finished (the page closes the connection on it, so the browser does not reconnect).
``?replay=1`` streams a finished run's stored events again at their recorded pace (gaps
capped), so a person can watch how it went.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from arbor.runtime.runs import RunManager
from arbor.service.dashboard.web import Dashboard, DashboardRoute, Viewer, dashboard_of
from arbor.service.progress import NodeProgress, node_progress
from arbor.store import ApprovalRecord, EventRecord, RunRecord, RunStatus

__all__ = [
    "EventRow",
    "NodeProgress",
    "RunView",
    "manager_of",
    "node_progress",
    "router",
    "run_view",
]

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

#: Seconds between keep-alive comments on an idle stream.
PING_SECONDS = 15
#: Longest pause between two replayed events, in seconds.
REPLAY_MAX_GAP = 1.0
_TERMINAL_EVENT_STATUS: dict[str, RunStatus] = {
    "run_finished": "succeeded",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
}
# Events after which the status block may look different.
_QUIET_EVENTS = frozenset({"llm_call", "tool_call", "cli_options"})
_MAX_EVENTS = 100_000
_SETTLE_TRIES = 40
_SETTLE_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class EventRow:
    """One timeline row: an event with the time it was stored (or seen, when live)."""

    seq: int
    type: str
    node: str | None
    data: dict[str, Any]
    at: datetime


@dataclass(slots=True)
class RunView:
    run: RunRecord
    #: The status shown: the stored one, or the one a just-seen terminal event implies.
    status: RunStatus
    model: str | None
    nodes: list[NodeProgress]
    pending: list[ApprovalRecord]
    decided: list[ApprovalRecord] = field(default_factory=list)
    active: bool = False

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


def manager_of(dash: Dashboard) -> RunManager:
    runs = dash.ctx.runs
    if runs is None:  # a context built without one: a wiring bug, not the user's fault
        raise RuntimeError("this service context has no RunManager")
    return runs


async def run_view(runs: RunManager, run_id: str, hint: RunStatus | None = None) -> RunView:
    """Everything the status block shows, read from the store (NotFoundError if unknown)."""
    store = runs.store
    run = await store.runs.get(run_id)
    status = run.status
    if hint is not None and status not in ("succeeded", "failed", "cancelled"):
        status = hint  # the terminal event is stored before the status is
    events = await store.event_log.list(run_id, limit=_MAX_EVENTS)
    approvals = await store.approvals.list(run_id=run_id)
    options = await runs.options(run_id)
    return RunView(
        run=run,
        status=status,
        model=options.model,
        nodes=node_progress(events, status),
        pending=[a for a in approvals if a.status == "pending"] if status == run.status else [],
        decided=[a for a in approvals if a.status != "pending"],
        active=runs.active(run_id),
    )


def event_rows(events: Sequence[EventRecord]) -> list[EventRow]:
    return [EventRow(e.seq, e.type, e.node, e.data, e.created_at) for e in events]


@router.get("/runs/{run_id}/stream")
async def run_stream(
    request: Request,
    run_id: str,
    session: Viewer,
    after: Annotated[int, Query(ge=0)] = 0,
    replay: bool = False,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
) -> EventSourceResponse:
    dash = dashboard_of(request)
    runs = manager_of(dash)
    await runs.store.runs.get(run_id)  # 404 before the stream starts
    start = max(after, last_event_id or 0)
    page = {"session": session, "csrf_token": session.csrf_token}
    if replay:
        source = _replay(dash, runs, run_id, start, page)
    else:
        source = _follow(dash, runs, run_id, start, page)
    return EventSourceResponse(source, ping=PING_SECONDS)


async def _follow(
    dash: Dashboard, runs: RunManager, run_id: str, start: int, page: dict[str, Any]
) -> AsyncIterator[ServerSentEvent]:
    hint: RunStatus | None = None
    # First the status as it is now: the page may have been rendered a moment ago.
    yield await _status(dash, runs, run_id, hint, page)
    async with aclosing(runs.watch(run_id, start, follow=True)) as events:
        async for e in events:
            row = EventRow(e.seq, e.type, e.node, e.data, datetime.now(UTC))
            yield _event(dash, row)
            hint = _TERMINAL_EVENT_STATUS.get(e.type, hint)
            if e.type not in _QUIET_EVENTS:
                yield await _status(dash, runs, run_id, hint, page)
    await _settled(runs, run_id)
    yield await _status(dash, runs, run_id, hint, page)
    yield ServerSentEvent(data="end", event="run-end")


async def _replay(
    dash: Dashboard, runs: RunManager, run_id: str, start: int, page: dict[str, Any]
) -> AsyncIterator[ServerSentEvent]:
    records = await runs.store.event_log.list(run_id, after_seq=start, limit=_MAX_EVENTS)
    previous: datetime | None = None
    for record in records:
        if previous is not None:
            gap = (record.created_at - previous).total_seconds()
            await asyncio.sleep(min(max(gap, 0.05), REPLAY_MAX_GAP))
        previous = record.created_at
        yield _event(
            dash, EventRow(record.seq, record.type, record.node, record.data, record.created_at)
        )
    yield await _status(dash, runs, run_id, None, page)
    yield ServerSentEvent(data="end", event="run-end")


async def _settled(runs: RunManager, run_id: str) -> None:
    """Wait (briefly) until the run's final status and output are stored: the runner writes
    its terminal event first."""
    for _ in range(_SETTLE_TRIES):
        if (await runs.store.runs.get(run_id)).finished:
            return
        await asyncio.sleep(_SETTLE_SECONDS)


def _event(dash: Dashboard, row: EventRow) -> ServerSentEvent:
    html = dash.templates.get_template("_event.html").render(e=row)
    return ServerSentEvent(data=html, event="run-event", id=str(row.seq))


async def _status(
    dash: Dashboard, runs: RunManager, run_id: str, hint: RunStatus | None, page: dict[str, Any]
) -> ServerSentEvent:
    """The status block; ``page`` carries the session and its CSRF token for its forms."""
    view = await run_view(runs, run_id, hint)
    html = dash.templates.get_template("_run_status.html").render(v=view, **page)
    return ServerSentEvent(data=html, event="run-status")
