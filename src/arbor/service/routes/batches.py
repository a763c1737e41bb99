"""``/v1/batches``: create batches (an uploaded JSONL/CSV file, a dataset under
``ARBOR_HOME/datasets`` or inline rows), follow their progress, page through their items,
pause, resume or cancel them, and download their results.

A created batch starts at once in the background
(:class:`~arbor.runtime.batch_manager.BatchManager`); any server on the same database may join
it. A malformed row becomes a failed item with its
reason, never a failed batch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from arbor.runtime.batch_manager import BatchManager
from arbor.service.batch_input import BatchCreate, invalid, read_create_request
from arbor.service.deps import Ctx, KeyFirstRoute, ReadKey, RunKey
from arbor.store.batches import (
    BatchItemRecord,
    BatchItemStatus,
    BatchKind,
    BatchRecord,
    BatchStatus,
)

__all__ = [
    "BatchDetail",
    "BatchItemPage",
    "BatchItemPublic",
    "BatchPage",
    "BatchProgressPublic",
    "BatchPublic",
    "BatchResume",
    "router",
]

router = APIRouter(prefix="/v1/batches", tags=["batches"], route_class=KeyFirstRoute)

_BatchId = Annotated[str, Path(min_length=1, max_length=64)]


class BatchProgressPublic(BaseModel):
    """Item counts per state and the usage of finished items."""

    total: int
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    done: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    #: Items finished per second over the last minute (all servers together).
    rate_per_second: float | None = None
    #: Seconds until the remaining items are done at that rate (null when unknown).
    eta_seconds: float | None = None


class BatchPublic(BaseModel):
    id: str
    name: str
    kind: BatchKind
    #: The template's first line, or the agent's or workflow's name.
    target: str
    model: str | None
    status: BatchStatus
    paused_reason: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    progress: BatchProgressPublic


class BatchDetail(BatchPublic):
    #: The stored spec: template/agent/workflow, model and options.
    spec: dict[str, Any]
    #: Whether this server drives the batch right now.
    driven_here: bool


class BatchPage(BaseModel):
    items: list[BatchPublic]
    #: Pass back as ``cursor`` for the next page; null on the last one.
    next_cursor: str | None


class BatchItemPublic(BaseModel):
    item: int
    status: BatchItemStatus
    input: Any
    output: Any
    error: str | None
    attempts: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    run_id: str | None
    started_at: datetime | None
    finished_at: datetime | None


class BatchItemPage(BaseModel):
    items: list[BatchItemPublic]
    #: Pass back as ``cursor`` for the next page (the last row index); null on the last one.
    next_cursor: int | None


class BatchResume(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget_usd: float | None = Field(
        None, ge=0, le=1e9, strict=True, description="A new budget in USD."
    )


_CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": BatchCreate.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **{
                            k: {"type": "string"}
                            for k in BatchCreate.model_fields
                            if k not in ("dataset", "rows")
                        },
                    },
                }
            },
        },
    }
}


@router.post("", status_code=202, openapi_extra=_CREATE_BODY)
async def create_batch(request: Request, ctx: Ctx, key: RunKey, response: Response) -> BatchDetail:
    """Create a batch from an upload (multipart: ``file`` plus option fields) or a JSON
    body naming a dataset or carrying ``rows``; it starts at once (202)."""
    manager = _manager(ctx.batches)
    items, spec, name = await read_create_request(request, ctx, key.key_id)
    record = await manager.create(items, spec, name=name)
    response.headers["Location"] = f"/v1/batches/{record.id}"
    return await _detail(manager, record)


@router.get("")
async def list_batches(
    ctx: Ctx,
    _key: ReadKey,
    status: BatchStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> BatchPage:
    """Batches newest first, filtered by status, ``limit`` per page."""
    manager = _manager(ctx.batches)
    try:
        records, next_cursor = await manager.page(status=status, limit=limit, cursor=cursor)
    except ValueError:
        raise invalid("not a cursor this API returned", param="cursor", loc="query") from None
    return BatchPage(
        items=[await _public(manager, r, rate=False) for r in records], next_cursor=next_cursor
    )


@router.get("/{batch_id}")
async def get_batch(batch_id: _BatchId, ctx: Ctx, _key: ReadKey) -> BatchDetail:
    """A batch with its progress: counts per state, tokens, cost, rate and ETA."""
    manager = _manager(ctx.batches)
    return await _detail(manager, await manager.repo.get(batch_id, progress=True))


@router.get("/{batch_id}/items")
async def list_items(
    batch_id: _BatchId,
    ctx: Ctx,
    _key: ReadKey,
    status: BatchItemStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        int | None, Query(ge=0, le=2**62, description="Items after this row index.")
    ] = None,
) -> BatchItemPage:
    """The batch's items in row order, filtered by status, ``limit`` per page."""
    manager = _manager(ctx.batches)
    await manager.repo.get(batch_id)  # 404 for an unknown batch
    after = -1 if cursor is None else cursor
    page = await manager.repo.items(batch_id, after=after, limit=limit + 1, status=status)
    more = len(page) > limit
    page = page[:limit]
    next_cursor = page[-1].item if more and page else None
    return BatchItemPage(items=[item_public(i) for i in page], next_cursor=next_cursor)


@router.get("/{batch_id}/items/{item}")
async def get_item(
    batch_id: _BatchId, item: Annotated[int, Path(ge=0, le=2**62)], ctx: Ctx, _key: ReadKey
) -> BatchItemPublic:
    """One item: its input, result or error, attempts, usage and cost."""
    return item_public(await _manager(ctx.batches).item(batch_id, item))


@router.post("/{batch_id}/cancel")
async def cancel_batch(batch_id: _BatchId, ctx: Ctx, _key: RunKey) -> BatchDetail:
    """Cancel the batch: its unfinished items become cancelled; 409 if it already ended."""
    manager = _manager(ctx.batches)
    return await _detail(manager, await manager.cancel(batch_id))


@router.post("/{batch_id}/pause")
async def pause_batch(batch_id: _BatchId, ctx: Ctx, _key: RunKey) -> BatchDetail:
    """Pause the batch: items in flight finish, the rest stay pending; 409 unless it is
    pending or running."""
    manager = _manager(ctx.batches)
    return await _detail(manager, await manager.pause(batch_id))


@router.post("/{batch_id}/resume")
async def resume_batch(
    batch_id: _BatchId, ctx: Ctx, _key: RunKey, body: BatchResume | None = None
) -> BatchDetail:
    """Resume a paused batch (optionally with a new budget); 409 if it already ended."""
    manager = _manager(ctx.batches)
    budget = body.budget_usd if body is not None else None
    return await _detail(manager, await manager.resume(batch_id, budget_usd=budget))


@router.get(
    "/{batch_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/x-ndjson": {}, "text/csv": {}},
            "description": "Every item, as ``arbor batch export`` writes it",
        }
    },
)
async def batch_results(
    batch_id: _BatchId,
    ctx: Ctx,
    _key: ReadKey,
    format: Literal["jsonl", "csv"] = "jsonl",
) -> StreamingResponse:
    """Every item's result, streamed: the rows ``arbor batch export`` writes."""
    manager = _manager(ctx.batches)
    await manager.repo.get(batch_id)  # 404 before the stream starts
    media = "application/x-ndjson" if format == "jsonl" else "text/csv"
    filename = f"batch-{batch_id}.{format}"
    return StreamingResponse(
        manager.export_chunks(batch_id, format),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# ---- helpers ----------------------------------------------------------------------------
def _manager(batches: BatchManager | None) -> BatchManager:
    if batches is None:  # a context built without one: a wiring bug, not the caller's fault
        raise RuntimeError("this service context has no BatchManager")
    return batches


async def _public(manager: BatchManager, record: BatchRecord, *, rate: bool) -> BatchPublic:
    return BatchPublic(**(await _fields(manager, record, rate=rate)))


async def _detail(manager: BatchManager, record: BatchRecord) -> BatchDetail:
    fields = await _fields(manager, record, rate=True)
    return BatchDetail(**fields, spec=record.spec, driven_here=manager.active(record.id))


async def _fields(manager: BatchManager, record: BatchRecord, *, rate: bool) -> dict[str, Any]:
    progress = await manager.progress_of(record, rate=rate)
    spec = record.spec
    return {
        "id": record.id,
        "name": record.name,
        "kind": record.kind,
        "target": manager.describe(record),
        "model": spec.get("model") if isinstance(spec.get("model"), str) else None,
        "status": record.status,
        "paused_reason": record.paused_reason,
        "error": record.error,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "finished_at": record.finished_at,
        "progress": BatchProgressPublic(**progress),
    }


def item_public(item: BatchItemRecord) -> BatchItemPublic:
    return BatchItemPublic(
        item=item.item,
        status=item.status,
        input=item.input,
        output=item.output,
        error=item.error,
        attempts=item.attempts,
        input_tokens=item.input_tokens,
        output_tokens=item.output_tokens,
        cost_usd=item.cost_usd,
        run_id=item.run_id,
        started_at=item.started_at,
        finished_at=item.finished_at,
    )
