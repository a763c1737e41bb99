"""Runs: the list (filtered by status and workflow, paged), a form to start a workflow with
a JSON input, the live run page, and the approve / reject / cancel buttons.

Everything goes through the service's :class:`~arbor.runtime.runs.RunManager` (the same
object the REST API uses), so a run started here is driven, resumed and recorded exactly
like one started over HTTP. Starting and deciding runs needs the ``run`` scope; decisions
are recorded under the session's key name.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from pydantic import BaseModel

from arbor.core.errors import ArborError, InvalidRequestError
from arbor.runtime.runs import RunManager
from arbor.service.dashboard.live import event_rows, manager_of, run_view
from arbor.service.dashboard.sessions import Session
from arbor.service.dashboard.web import (
    Checked,
    DashboardRoute,
    Viewer,
    dashboard_of,
    page_url,
    render,
    see_other,
    status_filter,
)
from arbor.service.errors import ForbiddenError
from arbor.service.problems import problem_for
from arbor.store import RunStatus

__all__ = ["example_input", "router"]

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

_STATUSES: tuple[RunStatus, ...] = (
    "pending",
    "running",
    "waiting_approval",
    "succeeded",
    "failed",
    "cancelled",
)
_PAGE = 50
_MAX_INPUT = 200_000
_MAX_EVENTS = 100_000


@router.get("/runs")
async def list_runs(
    request: Request,
    session: Viewer,
    status: Annotated[str, Query(max_length=40)] = "",
    workflow: Annotated[str, Query(max_length=200)] = "",
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    runs = manager_of(dashboard_of(request))
    try:
        page = await runs.store.runs.list(
            status=status_filter(status, _STATUSES),
            workflow=workflow or None,
            limit=_PAGE,
            cursor=cursor,
        )
    except ValueError:
        raise InvalidRequestError("cursor: not a cursor this page made") from None
    return render(
        request,
        "runs.html",
        refresh_url=page_url(request),
        runs=page.runs,
        next_cursor=page.next_cursor,
        status=status,
        workflow=workflow,
        statuses=_STATUSES,
        workflows=runs.workflow_names(),
    )


@router.get("/runs/new")
async def new_run(request: Request, session: Viewer, workflow: str = "") -> Response:
    _require_run(session.can("run"))
    runs = manager_of(dashboard_of(request))
    names = runs.workflow_names()
    chosen = workflow if workflow in names else (names[0] if names else "")
    return _form(request, runs, chosen, "", _example(runs, chosen))


@router.get("/runs/new/example")
async def example(request: Request, session: Viewer, workflow: str = "") -> Response:
    """The input box filled with the chosen workflow's example (htmx swaps it in)."""
    runs = manager_of(dashboard_of(request))
    return render(request, "_run_input.html", input=_example(runs, workflow))


@router.post("/runs/new")
async def start_run(
    request: Request,
    session: Checked,
    workflow: Annotated[str, Form(max_length=200)] = "",
    model: Annotated[str, Form(max_length=200)] = "",
    input: Annotated[str, Form()] = "{}",
) -> Response:
    _require_run(session.can("run"))
    runs = manager_of(dashboard_of(request))
    try:
        data = _parse_input(input)
        run_id = await runs.start(
            workflow, data, model=model.strip() or None, key_id=session.key_id
        )
    except ArborError as exc:
        return _form(request, runs, workflow, model, input, error=exc)
    return see_other(f"/runs/{run_id}")


@router.get("/runs/{run_id}")
async def show_run(
    request: Request, run_id: str, session: Viewer, replay: bool = False
) -> Response:
    runs = manager_of(dashboard_of(request))
    await runs.store.runs.get(run_id)  # 404 first
    # Events before the status: a status read later is never older than the events shown
    # (the stream brings later events, and a fresh status block as it connects).
    events = [] if replay else await runs.store.event_log.list(run_id, limit=_MAX_EVENTS)
    view = await run_view(runs, run_id)
    last_seq = events[-1].seq if events else 0
    return render(
        request,
        "run.html",
        v=view,
        events=event_rows(events),
        last_seq=last_seq,
        replay=replay,
        input=json.dumps(view.run.input, indent=2),
    )


@router.post("/runs/{run_id}/approve")
async def approve_run(
    request: Request,
    run_id: str,
    session: Checked,
    reason: Annotated[str, Form(max_length=4000)] = "",
    node: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    return await _decide(request, run_id, session, True, reason, node)


@router.post("/runs/{run_id}/reject")
async def reject_run(
    request: Request,
    run_id: str,
    session: Checked,
    reason: Annotated[str, Form(max_length=4000)] = "",
    node: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    return await _decide(request, run_id, session, False, reason, node)


@router.post("/runs/{run_id}/cancel")
async def cancel_run(request: Request, run_id: str, session: Checked) -> Response:
    _require_run(session.can("run"))
    await manager_of(dashboard_of(request)).cancel(run_id)
    return see_other(f"/runs/{run_id}")


# ---- helpers ----------------------------------------------------------------------------
async def _decide(
    request: Request,
    run_id: str,
    session: Session,
    approved: bool,
    reason: str,
    node: str,
) -> Response:
    """Approve or reject, recorded under the session's key name (its id if unnamed)."""
    _require_run(session.can("run"))
    runs = manager_of(dashboard_of(request))
    by = session.name or session.key_id
    await runs.decide(run_id, approved, reason.strip(), by, node=node or None)
    return see_other(f"/runs/{run_id}")


def _require_run(allowed: bool) -> None:
    if not allowed:
        raise ForbiddenError("starting and deciding runs needs an API key with the run scope")


def _parse_input(text: str) -> dict[str, Any]:
    if len(text) > _MAX_INPUT:
        raise InvalidRequestError(f"input: longer than {_MAX_INPUT} characters")
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"input: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequestError("input: must be a JSON object")
    return data


def example_input(state_type: type[BaseModel]) -> dict[str, Any]:
    """A starting point for the input box: the state's required fields with empty values."""
    blanks = {"string": "", "integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}
    schema = state_type.model_json_schema()
    props = schema.get("properties", {})
    return {
        name: blanks.get(str(props.get(name, {}).get("type")), None)
        for name in schema.get("required", [])
    }


def _example(runs: RunManager, workflow: str) -> str:
    if not workflow:
        return "{}"
    try:
        state_type = runs.workflow(workflow).state_type
    except ArborError:
        return "{}"
    return json.dumps(example_input(state_type), indent=2)


def _form(
    request: Request,
    runs: RunManager,
    workflow: str,
    model: str,
    input_text: str,
    *,
    error: ArborError | None = None,
) -> Response:
    message = dashboard_of(request).ctx.redactor.text(str(error)) if error is not None else ""
    return render(
        request,
        "run_new.html",
        status_code=problem_for(error).status if error is not None else 200,
        workflows=runs.workflow_names(),
        workflow=workflow,
        model=model,
        input=input_text,
        error=message,
    )
