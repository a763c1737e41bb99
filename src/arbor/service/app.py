"""The FastAPI application: the API's routers (:data:`arbor.service.routes.ROUTERS`) then the
dashboard's pages, problem+json
errors, and the middleware stack (outermost first): request id + metrics, CORS (only when
origins are configured — with none, a preflight finds no route and nothing is allowed), body
size limit.

``create_app(ctx)`` serves a context the caller owns (tests build two apps in one process);
``create_app(settings=...)`` opens a context in the lifespan and closes it at shutdown, after
the server has drained in-flight requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from arbor import __version__
from arbor.core.config import Settings, load_settings
from arbor.service.context import ServiceContext, open_context
from arbor.service.dashboard import router as dashboard_router
from arbor.service.middleware import BodyLimitMiddleware, RequestMiddleware
from arbor.service.problems import (
    OPENAI_ERROR_RESPONSES,
    OPENAI_PATHS,
    PROBLEM_RESPONSES,
    install_problem_handlers,
)
from arbor.service.routes import ROUTERS

__all__ = ["create_app"]

_CORS_HEADERS = ["Authorization", "Content-Type", "Last-Event-ID", "X-API-Key", "X-Request-ID"]


def create_app(ctx: ServiceContext | None = None, *, settings: Settings | None = None) -> FastAPI:
    """The service app; with ``ctx`` the caller owns it, without one the app opens (and
    closes) its own from ``settings`` (loaded from the environment when not given)."""
    if ctx is not None and settings is not None and settings is not ctx.settings:
        raise ValueError("pass either a context or settings, not both")
    resolved = ctx.settings if ctx is not None else (settings or load_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = None
        if app.state.ctx is None:
            owned = app.state.ctx = await open_context(resolved)
        try:
            if app.state.ctx.runs is not None:  # continue runs a stopped server left behind
                await app.state.ctx.runs.resume_interrupted()
            if app.state.ctx.batches is not None:  # and join the batches left running
                await app.state.ctx.batches.start()
            yield
        finally:
            if owned is not None:
                await owned.aclose()
                app.state.ctx = None

    app = FastAPI(
        title="Arbor",
        version=__version__,
        description="Run teams of LLM agents in production.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.ctx = ctx
    install_problem_handlers(app)
    for router in (*ROUTERS, dashboard_router):
        openai = any(getattr(r, "path", "").startswith(OPENAI_PATHS) for r in router.routes)
        app.include_router(
            router, responses=OPENAI_ERROR_RESPONSES if openai else PROBLEM_RESPONSES
        )
    service = resolved.service
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=service.max_body_bytes,
        max_header_bytes=service.max_header_bytes,
    )
    if service.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=service.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=_CORS_HEADERS,
            # Headers a browser client may read: when to retry, the request's id (to quote
            # in a report) and the run a workflow model started (to follow its events).
            expose_headers=["Retry-After", "X-Arbor-Run-Id", "X-Request-ID"],
        )
    app.add_middleware(RequestMiddleware)
    return app
