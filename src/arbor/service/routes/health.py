"""``/healthz`` (the process answers), ``/readyz`` (the store answers and the default model can
be served) and ``/metrics`` (Prometheus text; public unless ``service.metrics_require_key``).

Readiness never loads or calls a model: for a local GGUF it checks that the file is there,
for an HTTP provider that it is configured (credentials present) — a probe every few seconds
must not cost a generation or an upstream request.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy import text
from starlette.responses import Response

from arbor.core.errors import ArborError
from arbor.service.deps import Ctx, authenticate
from arbor.service.problems import Problem, problem_response

__all__ = ["Health", "Readiness", "router"]

router = APIRouter(tags=["health"])

_STORE_TIMEOUT = 2.0


class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    status: str
    #: Each check's verdict: "ok" or why not.
    checks: dict[str, str]


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process is serving requests."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"description": "Not ready (problem+json with the failed checks)"}},
)
async def readyz(request: Request, ctx: Ctx) -> Response | Readiness:
    """Readiness: the store answers and the default model can be served."""
    checks = {"store": await _check_store(ctx), "model": _check_model(ctx)}
    if all(v == "ok" for v in checks.values()):
        return Readiness(status="ready", checks=checks)
    failed = "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
    return problem_response(
        request,
        Problem(503, f"not ready: {failed}", "not_ready", extra={"checks": checks}),
    )


async def _check_store(ctx: Ctx) -> str:
    async def ping() -> None:
        async with ctx.db.session() as session:
            await session.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(ping(), _STORE_TIMEOUT)
    except TimeoutError:
        return f"no answer within {_STORE_TIMEOUT:g} s"
    except Exception as exc:  # any driver error means "not ready", reported by type only
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def _check_model(ctx: Ctx) -> str:
    model_id = ctx.settings.default_model
    try:
        model = ctx.client.model(model_id)  # builds the adapter; loads nothing
    except ArborError as exc:
        return ctx.redactor.text(f"{model_id}: {exc.message}")
    path = getattr(model, "path", None)
    if isinstance(path, Path) and not path.is_file():
        return f"{model_id}: model file is missing"
    return "ok"


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request, ctx: Ctx) -> Response:
    """Prometheus metrics of this instance (LLM calls, cache, breakers, HTTP requests)."""
    if ctx.settings.service.metrics_require_key:
        principal = await authenticate(request)
        principal.require("read")
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
