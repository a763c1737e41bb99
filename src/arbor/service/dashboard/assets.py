"""The dashboard's static files (its stylesheet and the vendored htmx), served from the
installed package: no CDN, nothing fetched from elsewhere. Public (the login page needs
them); only plain names inside ``static/`` resolve, so no path can leave that directory.
"""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files

from fastapi import APIRouter, Request, Response

from arbor.core.errors import NotFoundError
from arbor.service.dashboard.web import DashboardRoute

__all__ = ["router"]

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}$")
_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".LICENSE": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
}


@router.get("/static/{name:path}")
async def static_file(name: str, request: Request) -> Response:
    parts = name.split("/")
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if len(parts) > 3 or not all(_PART.match(p) for p in parts) or suffix not in _TYPES:
        raise NotFoundError(f"no static file {name!r}")
    resource = files("arbor.service.dashboard").joinpath("static", *parts)
    if not resource.is_file():
        raise NotFoundError(f"no static file {name!r}")
    body = resource.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "Cache-Control": "public, max-age=3600",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=_TYPES[suffix], headers=headers)
