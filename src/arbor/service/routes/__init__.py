"""One router module per resource; :func:`arbor.service.app.create_app` includes every router
in :data:`ROUTERS` (add yours with a one-line edit), then the dashboard's pages. The routes
never import the dashboard; the dashboard's pages reuse the routes' schemas."""

from __future__ import annotations

from fastapi import APIRouter

from arbor.service.routes.agents import router as agents_router
from arbor.service.routes.batches import router as batches_router
from arbor.service.routes.health import router as health_router
from arbor.service.routes.keys import router as keys_router
from arbor.service.routes.openai import router as openai_router
from arbor.service.routes.runs import router as runs_router
from arbor.service.routes.usage import router as usage_router
from arbor.service.routes.workspaces import router as workspaces_router

__all__ = ["ROUTERS"]

# Routes are matched in order: the gateway's hot paths come first.
ROUTERS: tuple[APIRouter, ...] = (
    openai_router,
    health_router,
    keys_router,
    runs_router,
    workspaces_router,
    batches_router,
    agents_router,
    usage_router,
)
