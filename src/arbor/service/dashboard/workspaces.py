"""The run page's Workspace panel: the files a run generated, a viewer and a zip download.

The panel is a fragment the run page loads (and refreshes while the run is active) with
htmx; the viewer is a page showing one file as escaped text in a ``<pre>`` under the
dashboard's strict CSP (no inline scripts, nothing from elsewhere). Paths are validated the
same way as on the API (:mod:`arbor.service.routes.workspaces`).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request, Response

from arbor.core.errors import NotFoundError
from arbor.service.dashboard.web import DashboardRoute, Viewer, dashboard_of, render
from arbor.service.routes.workspaces import list_entries, open_workspace, read_file

__all__ = ["router"]

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


@router.get("/runs/{run_id}/workspace/panel")
async def workspace_panel(request: Request, run_id: str, session: Viewer) -> Response:
    ctx = dashboard_of(request).ctx
    try:
        ws = await open_workspace(ctx, run_id)
    except NotFoundError:
        await _known(request, run_id)
        return render(request, "_workspace_panel.html", run_id=run_id, files=None, total=0)
    files = await asyncio.to_thread(list_entries, ws)
    total = sum(f.size for f in files)
    return render(request, "_workspace_panel.html", run_id=run_id, files=files, total=total)


async def _known(request: Request, run_id: str) -> None:
    runs = dashboard_of(request).ctx.runs
    if runs is not None:
        await runs.store.runs.get(run_id)  # an unknown run is still a 404


@router.get("/runs/{run_id}/workspace/view")
async def workspace_file(
    request: Request,
    run_id: str,
    session: Viewer,
    path: str = Query(min_length=1, max_length=4096),
) -> Response:
    ws = await open_workspace(dashboard_of(request).ctx, run_id)
    file = await read_file(ws, path)
    return render(request, "workspace_file.html", run_id=run_id, file=file)


@router.get("/runs/{run_id}/workspace.zip")
async def workspace_zip(request: Request, run_id: str, session: Viewer) -> Response:
    ws = await open_workspace(dashboard_of(request).ctx, run_id)
    data = await asyncio.to_thread(ws.zip_bytes)
    disposition = f'attachment; filename="{run_id}-workspace.zip"'
    return Response(
        data,
        media_type="application/zip",
        headers={**_HEADERS, "Content-Disposition": disposition},
    )
