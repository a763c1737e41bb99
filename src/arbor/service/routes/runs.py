"""``/v1/runs``: start durable workflow runs, list and inspect them, cancel them, decide their
approvals, and stream their events over SSE.

The event stream sends each stored event as ``id: <seq>``, ``event: <type>`` and a JSON
``data`` line, replays from ``Last-Event-ID`` (or ``?after=``) so a reconnecting client gets
exactly what it missed, and ends after the run's terminal event; a finished run replays in
full. A run waiting for approval keeps its stream open until it is decided.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from arbor.core.errors import InvalidRequestError
from arbor.runtime.runs import RunManager
from arbor.service.deps import Ctx, KeyFirstRoute, ReadKey, RunKey
from arbor.service.progress import node_progress
from arbor.store import ApprovalRecord, EventRecord, RunRecord, RunStatus

__all__ = [
    "ApprovalPublic",
    "DecisionCreate",
    "NodeSummary",
    "RunCreate",
    "RunDetail",
    "RunPage",
    "RunPublic",
    "router",
]

router = APIRouter(prefix="/v1/runs", tags=["runs"], route_class=KeyFirstRoute)

#: Seconds between SSE keep-alive comments on an idle stream.
PING_SECONDS = 15


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(min_length=1, max_length=200, examples=["review-loop"])
    input: dict[str, Any] = Field(default_factory=dict, description="The initial state.")
    model: str | None = Field(None, max_length=200, description="provider:model for its agents")


class DecisionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=4000, description="Why; kept with the decision.")
    node: str | None = Field(
        None, max_length=200, description="The approval node (default: the pending one)."
    )


class RunPublic(BaseModel):
    id: str
    workflow: str
    status: RunStatus
    current_node: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class NodeSummary(BaseModel):
    """One node's progress, folded from the run's events."""

    name: str
    status: Literal["running", "finished", "waiting_approval", "failed", "cancelled"]
    #: Completed visits (loops visit a node more than once).
    visits: int
    last_event_at: datetime


class ApprovalPublic(BaseModel):
    node: str
    status: Literal["pending", "approved", "rejected"]
    decided_by: str | None
    reason: str | None
    created_at: datetime
    decided_at: datetime | None


class RunDetail(RunPublic):
    model: str | None
    input: dict[str, Any]
    #: The state folded from every checkpoint so far.
    state: dict[str, Any]
    output: dict[str, Any] | None
    nodes: list[NodeSummary]
    approvals: list[ApprovalPublic]


class RunPage(BaseModel):
    items: list[RunPublic]
    #: Pass back as ``cursor`` for the next page; null on the last one.
    next_cursor: str | None


@router.post("", status_code=201)
async def create_run(body: RunCreate, ctx: Ctx, key: RunKey, response: Response) -> RunPublic:
    """Start a run; it proceeds in the background (follow it on ``/events``)."""
    runs = _manager(ctx.runs)
    run_id = await runs.start(body.workflow, body.input, model=body.model, key_id=key.key_id)
    response.headers["Location"] = f"/v1/runs/{run_id}"
    return _public(await runs.store.runs.get(run_id))


@router.get("")
async def list_runs(
    ctx: Ctx,
    _key: ReadKey,
    status: RunStatus | None = None,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> RunPage:
    """Runs newest first, filtered by status and workflow, ``limit`` per page."""
    runs = _manager(ctx.runs)
    try:
        page = await runs.store.runs.list(
            status=status, workflow=workflow, limit=limit, cursor=cursor
        )
    except ValueError:
        raise InvalidRequestError("cursor: not a cursor this API returned") from None
    return RunPage(items=[_public(r) for r in page.runs], next_cursor=page.next_cursor)


@router.get("/{run_id}")
async def get_run(run_id: str, ctx: Ctx, _key: ReadKey) -> RunDetail:
    """A run with its state, output or error, per-node progress and approvals."""
    runs = _manager(ctx.runs)
    store = runs.store
    run = await store.runs.get(run_id)
    # The repository, not ``store.load``: that also resets the store's checkpoint fence,
    # which the manager's runner of this very run relies on.
    folded = await store.runs.load_state(run_id)
    events = await store.event_log.list(run_id, limit=1_000_000)
    approvals = await store.approvals.list(run_id=run_id)
    options = await runs.options(run_id)
    state = {k: v for k, v in {**run.input, **folded.state}.items() if not k.startswith("__")}
    return RunDetail(
        **_public(run).model_dump(),
        model=options.model,
        input=run.input,
        state=state,
        output=run.output,
        nodes=_nodes(events, run),
        approvals=[_approval(a) for a in approvals],
    )


@router.post("/{run_id}/cancel")
async def cancel_run(run_id: str, ctx: Ctx, _key: RunKey) -> RunPublic:
    """Stop the run and mark it cancelled; 409 if it already finished."""
    return _public(await _manager(ctx.runs).cancel(run_id))


@router.post("/{run_id}/approve")
async def approve_run(
    run_id: str, ctx: Ctx, key: RunKey, body: DecisionCreate | None = None
) -> RunPublic:
    """Approve the run's pending approval (recorded with the key's name) and resume it."""
    return await _decide(ctx.runs, run_id, True, body, key.display_name)


@router.post("/{run_id}/reject")
async def reject_run(
    run_id: str, ctx: Ctx, key: RunKey, body: DecisionCreate | None = None
) -> RunPublic:
    """Reject the run's pending approval (recorded with the key's name) and resume it."""
    return await _decide(ctx.runs, run_id, False, body, key.display_name)


@router.get(
    "/{run_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The run's events"}},
)
async def run_events(
    run_id: str,
    ctx: Ctx,
    _key: ReadKey,
    after: Annotated[int, Query(ge=0, description="Only events with a larger seq.")] = 0,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
    follow: Annotated[bool, Query(description="Keep streaming until the run ends.")] = True,
) -> EventSourceResponse:
    """The run's events as Server-Sent Events, from ``Last-Event-ID``/``after`` on."""
    runs = _manager(ctx.runs)
    await runs.store.runs.get(run_id)  # 404 before the stream starts
    start = max(after, last_event_id or 0)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async with aclosing(runs.watch(run_id, start, follow=follow)) as events:
            async for e in events:
                data = {"seq": e.seq, "type": e.type, "node": e.node, "data": e.data}
                yield ServerSentEvent(data=orjson.dumps(data).decode(), event=e.type, id=str(e.seq))

    return EventSourceResponse(stream(), ping=PING_SECONDS)


# ---- helpers ----------------------------------------------------------------------------
def _manager(runs: RunManager | None) -> RunManager:
    if runs is None:  # a context built without one: a wiring bug, not the caller's fault
        raise RuntimeError("this service context has no RunManager")
    return runs


async def _decide(
    runs: RunManager | None, run_id: str, approved: bool, body: DecisionCreate | None, by: str
) -> RunPublic:
    manager = _manager(runs)
    body = body or DecisionCreate()
    await manager.decide(run_id, approved, body.reason, by, node=body.node)
    return _public(await manager.store.runs.get(run_id))


def _public(run: RunRecord) -> RunPublic:
    return RunPublic(
        id=run.id,
        workflow=run.workflow,
        status=run.status,
        current_node=run.current_node,
        error=run.error,
        created_at=run.created_at,
        updated_at=run.updated_at,
        finished_at=run.finished_at,
    )


def _approval(a: ApprovalRecord) -> ApprovalPublic:
    return ApprovalPublic(
        node=a.node,
        status=a.status,
        decided_by=a.decided_by,
        reason=a.reason,
        created_at=a.created_at,
        decided_at=a.decided_at,
    )


def _nodes(events: list[EventRecord], run: RunRecord) -> list[NodeSummary]:
    """Each node's latest status and completed visits, in order of first appearance."""
    last_event_at = {e.node: e.created_at for e in events if e.node is not None}
    return [
        NodeSummary(
            name=p.name, status=p.status, visits=p.visits, last_event_at=last_event_at[p.name]
        )
        for p in node_progress(events, run.status)
    ]
