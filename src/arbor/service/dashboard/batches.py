"""Batches: the list with live progress bars, a batch's page (counts per state, rate, ETA,
tokens, cost; pause / resume / cancel buttons; its items, filtered by status and paged) and
an item's page (input, result or error, attempts, usage, cost).

Live updates are htmx polling of the page itself (``hx-select`` keeps only the live block),
every two seconds while a batch is active; a finished batch's block carries no trigger, so
the polling stops. Everything goes through the service's
:class:`~arbor.runtime.batch_manager.BatchManager`, the object the REST API uses.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from arbor.core.errors import InvalidRequestError
from arbor.runtime.batch_manager import BatchManager
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
from arbor.store.batches import BatchItemStatus, BatchRecord, BatchStatus

__all__ = ["router"]

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

_STATUSES: tuple[BatchStatus, ...] = (
    "pending",
    "running",
    "paused",
    "succeeded",
    "failed",
    "cancelled",
)
_ITEM_STATUSES: tuple[BatchItemStatus, ...] = (
    "pending",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
_PAGE = 50
_BatchId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/batches")
async def list_batches(
    request: Request,
    session: Viewer,
    status: Annotated[str, Query(max_length=40)] = "",
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    manager = _manager(request)
    try:
        records, next_cursor = await manager.page(
            status=status_filter(status, _STATUSES),
            limit=_PAGE,
            cursor=cursor,
        )
    except ValueError:
        raise InvalidRequestError("cursor: not a cursor this page made") from None
    rows = [await _row(manager, r, rate=False) for r in records]
    return render(
        request,
        "batches.html",
        refresh_url=page_url(request),
        batches=rows,
        live=any(r["active"] for r in rows),
        next_cursor=next_cursor,
        status=status,
        statuses=_STATUSES,
    )


@router.get("/batches/{batch_id}")
async def show_batch(
    request: Request,
    batch_id: _BatchId,
    session: Viewer,
    status: Annotated[str, Query(max_length=40)] = "",
    cursor: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> Response:
    only = status_filter(status, _ITEM_STATUSES)
    manager = _manager(request)
    record = await manager.repo.get(batch_id, progress=True)
    after = -1 if cursor is None else cursor
    items = await manager.repo.items(
        batch_id,
        after=after,
        limit=_PAGE + 1,
        status=only,
    )
    more = len(items) > _PAGE
    items = items[:_PAGE]
    return render(
        request,
        "batch.html",
        refresh_url=page_url(request),
        b=await _row(manager, record, rate=True),
        spec=json.dumps(record.spec, indent=2, ensure_ascii=False),
        items=items,
        next_cursor=items[-1].item if more and items else None,
        status=status,
        statuses=_ITEM_STATUSES,
        can_run=session.can("run"),
    )


@router.get("/batches/{batch_id}/items/{item}")
async def show_item(
    request: Request,
    batch_id: _BatchId,
    item: Annotated[int, Path(ge=0, le=2**62)],
    session: Viewer,
) -> Response:
    manager = _manager(request)
    record = await manager.repo.get(batch_id)
    found = await manager.item(batch_id, item)
    return render(
        request,
        "batch_item.html",
        b=record,
        i=found,
        input=json.dumps(found.input, indent=2, ensure_ascii=False),
        output=found.output
        if isinstance(found.output, str)
        else json.dumps(found.output, indent=2, ensure_ascii=False),
    )


@router.get("/batches/{batch_id}/results")
async def batch_results(
    request: Request,
    batch_id: _BatchId,
    session: Viewer,
    format: Literal["jsonl", "csv"] = "jsonl",
) -> Response:
    """The results download (the rows ``arbor batch export`` writes), for the session."""
    manager = _manager(request)
    await manager.repo.get(batch_id)  # 404 before the stream starts
    return StreamingResponse(
        manager.export_chunks(batch_id, format),
        media_type="application/x-ndjson" if format == "jsonl" else "text/csv",
        headers={"Content-Disposition": f'attachment; filename="batch-{batch_id}.{format}"'},
    )


@router.post("/batches/{batch_id}/pause")
async def pause_batch(request: Request, batch_id: _BatchId, session: Checked) -> Response:
    _require_run(session)
    await _manager(request).pause(batch_id)
    return see_other(f"/batches/{batch_id}")


@router.post("/batches/{batch_id}/resume")
async def resume_batch(
    request: Request,
    batch_id: _BatchId,
    session: Checked,
    budget_usd: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    _require_run(session)
    budget = _budget(budget_usd)
    await _manager(request).resume(batch_id, budget_usd=budget)
    return see_other(f"/batches/{batch_id}")


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: _BatchId, session: Checked) -> Response:
    _require_run(session)
    await _manager(request).cancel(batch_id)
    return see_other(f"/batches/{batch_id}")


# ---- helpers ----------------------------------------------------------------------------
def _manager(request: Request) -> BatchManager:
    batches = dashboard_of(request).ctx.batches
    if batches is None:  # a context built without one: a wiring bug, not the user's fault
        raise RuntimeError("this service context has no BatchManager")
    return batches


def _require_run(session: Session) -> None:
    if not session.can("run"):
        raise ForbiddenError("pausing, resuming and cancelling batches needs the run scope")


def _budget(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequestError(f"budget_usd: not a number: {text!r}") from None
    if not 0 <= value <= 1e9:
        raise InvalidRequestError("budget_usd: must be between 0 and 1e9")
    return value


async def _row(manager: BatchManager, record: BatchRecord, *, rate: bool) -> dict[str, Any]:
    """What a progress bar and the counts show: percentages of the total per state."""
    p = await manager.progress_of(record, rate=rate)
    total = p["total"] or 1
    return {
        "record": record,
        "target": manager.describe(record),
        "p": p,
        "active": record.status in ("pending", "running"),
        "percent": {
            k: round(100.0 * p[k] / total, 2)
            for k in ("succeeded", "failed", "cancelled", "running", "done")
        },
    }
