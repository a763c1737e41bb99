"""``/v1/runs/{id}/workspace``: the files a run generated (the software team's project).

A run's workspace is ``ARBOR_HOME/workspaces/<run_id>``, derived from the run id alone (the
service never imports the apps, and never trusts a path stored in a run's state). Paths are
validated by :class:`~arbor.runtime.sandbox.Workspace`: no ``..``, no absolute paths, no
symlinks or special files. Reading needs the ``read`` scope; a run without a workspace is 404.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from fastapi import APIRouter, Response
from pydantic import BaseModel

from arbor.core.errors import InvalidRequestError, NotFoundError
from arbor.runtime.sandbox import Workspace, WorkspaceError
from arbor.runtime.sandbox._paths import check_relative  # the workspace's own path rules
from arbor.service.context import ServiceContext
from arbor.service.deps import Ctx, KeyFirstRoute, ReadKey

__all__ = [
    "WorkspaceFile",
    "WorkspaceListing",
    "list_entries",
    "open_workspace",
    "read_file",
    "router",
    "workspace_dir",
]

router = APIRouter(prefix="/v1/runs", tags=["workspaces"], route_class=KeyFirstRoute)

#: Largest file whose content the API returns (the workspace's own per-file limit is 1 MiB).
MAX_FILE_BYTES = 2 * 1024 * 1024


class WorkspaceEntry(BaseModel):
    path: str
    size: int


class WorkspaceListing(BaseModel):
    run_id: str
    files: list[WorkspaceEntry]
    total_bytes: int


class WorkspaceFile(BaseModel):
    path: str
    size: int
    sha256: str
    #: False when the file is not UTF-8 text; ``content`` is then empty.
    text: bool
    content: str


def workspace_dir(home: Path, run_id: str) -> Path:
    """Where the run's workspace lives (whether or not it exists)."""
    return home / "workspaces" / run_id


async def open_workspace(ctx: ServiceContext, run_id: str) -> Workspace:
    """The run's workspace; 404 when the run is unknown or has none."""
    if ctx.runs is None:  # a context built without runs: a wiring bug
        raise RuntimeError("this service context has no RunManager")
    await ctx.runs.store.runs.get(run_id)  # NotFoundError (404) for an unknown run
    root = workspace_dir(ctx.settings.home, run_id)

    def check() -> Workspace | None:
        if "/" in run_id or run_id in (".", "..") or root.is_symlink() or not root.is_dir():
            return None
        return Workspace(root)

    ws = await asyncio.to_thread(check)
    if ws is None:
        raise NotFoundError(f"run {run_id} has no workspace")
    return ws


def list_entries(ws: Workspace) -> list[WorkspaceEntry]:
    return [
        WorkspaceEntry(path=rel, size=(ws.root / rel).stat(follow_symlinks=False).st_size)
        for rel in ws.files()
    ]


@router.get("/{run_id}/workspace", response_class=Response)
async def download_workspace(run_id: str, ctx: Ctx, _key: ReadKey) -> Response:
    """The workspace as a zip archive (regular files only)."""
    ws = await open_workspace(ctx, run_id)
    data = await asyncio.to_thread(ws.zip_bytes)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{run_id}-workspace.zip"'},
    )


@router.get("/{run_id}/workspace/files")
async def list_workspace(run_id: str, ctx: Ctx, _key: ReadKey) -> WorkspaceListing:
    """The workspace's files with their sizes, sorted by path."""
    ws = await open_workspace(ctx, run_id)
    files = await asyncio.to_thread(list_entries, ws)
    return WorkspaceListing(run_id=run_id, files=files, total_bytes=sum(f.size for f in files))


async def read_file(ws: Workspace, path: str) -> WorkspaceFile:
    """One file of ``ws``: 422 for a bad path, 404 for a missing file."""
    try:
        rel = "/".join(check_relative(path))
    except WorkspaceError as exc:
        raise InvalidRequestError(str(exc)) from None

    def load() -> bytes | None:
        return ws.read(rel) if rel in ws.files() else None

    try:
        data = await asyncio.to_thread(load)
    except WorkspaceError as exc:  # a symlink or special file planted under the path
        raise InvalidRequestError(str(exc)) from None
    if data is None:
        raise NotFoundError(f"the workspace has no file {rel[:200]!r}")
    if len(data) > MAX_FILE_BYTES:
        raise InvalidRequestError(f"{path[:200]!r} is larger than {MAX_FILE_BYTES} bytes")
    try:
        text, is_text = data.decode("utf-8"), True
    except UnicodeDecodeError:
        text, is_text = "", False
    digest = hashlib.sha256(data).hexdigest()
    return WorkspaceFile(path=rel, size=len(data), sha256=digest, text=is_text, content=text)


@router.get("/{run_id}/workspace/files/{path:path}")
async def get_workspace_file(run_id: str, path: str, ctx: Ctx, _key: ReadKey) -> WorkspaceFile:
    """One file's content (UTF-8 text; binary files report ``text: false``)."""
    ws = await open_workspace(ctx, run_id)
    return await read_file(ws, path)
