"""The web dashboard at ``/``: server-rendered Jinja2 pages with htmx (vendored, no CDN) for
polling and Server-Sent Events, logged in with an API key.

One router per page group; :data:`router` gathers them for
:func:`arbor.service.app.create_app`. None of it appears in the OpenAPI schema: these are
pages for people, behind a session cookie rather than an API key.
"""

from __future__ import annotations

from fastapi import APIRouter

from arbor.service.dashboard import (
    agents,
    assets,
    batches,
    keys,
    live,
    login,
    overview,
    runs,
    usage,
    workspaces,
)

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
for _module in (assets, login, overview, agents, runs, live, batches, keys, usage, workspaces):
    router.include_router(_module.router)
