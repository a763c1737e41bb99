"""API keys (admin scope): the list, a form to create one, revoke and rotate.

A created or rotated key's secret appears once, in the response to that POST (``no-store``),
and nowhere else: the list shows each key's public prefix only. The form is validated by the
API's own :class:`~arbor.service.routes.keys.KeyCreate`. Revoking or rotating a key ends
every dashboard session opened with it, the current one included.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from pydantic import ValidationError

from arbor.core.errors import NotFoundError
from arbor.service.dashboard.sessions import Session
from arbor.service.dashboard.web import (
    SESSION_COOKIE,
    Checked,
    DashboardRoute,
    Viewer,
    dashboard_of,
    render,
    see_other,
    status_filter,
)
from arbor.service.errors import ForbiddenError
from arbor.service.routes.keys import KeyCreate, KeyPublic
from arbor.store import KeyScope, NewKey

__all__ = ["router"]

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

_SCOPES: tuple[KeyScope, ...] = ("read", "run", "admin")
_STATUSES = ("active", "expired", "revoked")


@router.get("/keys")
async def list_keys(
    request: Request, session: Viewer, status: Annotated[str, Query(max_length=20)] = ""
) -> Response:
    _require_admin(session)
    status_filter(status, _STATUSES)
    return await _page(request, status=status)


@router.post("/keys/new")
async def create_key(
    request: Request,
    session: Checked,
    name: Annotated[str, Form(max_length=200)] = "",
    scopes: Annotated[list[str] | None, Form()] = None,
    expires_in_days: Annotated[str, Form(max_length=20)] = "",
    rpm: Annotated[str, Form(max_length=20)] = "",
    tpm: Annotated[str, Form(max_length=20)] = "",
    budget_usd: Annotated[str, Form(max_length=30)] = "",
) -> Response:
    _require_admin(session)
    fields: dict[str, Any] = {"name": name.strip(), "scopes": scopes or []}
    for field, raw in (("rpm", rpm), ("tpm", tpm), ("budget_usd", budget_usd)):
        if raw.strip():
            fields[field] = raw.strip()
    if expires_in_days.strip():
        try:
            fields["expires_in"] = round(float(expires_in_days) * 86400)
        except ValueError:
            return await _page(request, error="expires in: not a number of days", status_code=422)
    try:
        body = KeyCreate.model_validate(fields, strict=False)  # form fields are text
    except ValidationError as exc:
        return await _page(request, error=_first_error(exc), status_code=422)
    new = await body.create_in(dashboard_of(request).ctx.keys)
    return await _page(request, shown=new, status_code=201)


@router.get("/keys/{key_id}/{action}")
async def confirm(request: Request, key_id: str, action: str, session: Viewer) -> Response:
    """Revoking and rotating cannot be undone: a page asks first."""
    _require_admin(session)
    if action not in ("revoke", "rotate"):
        raise NotFoundError(f"no key action {action!r}")
    record = await dashboard_of(request).ctx.keys.get(key_id)
    own = key_id == session.key_id
    return render(request, "key_confirm.html", key=KeyPublic.of(record), action=action, own=own)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str, session: Checked) -> Response:
    _require_admin(session)
    dash = dashboard_of(request)
    await dash.ctx.keys.revoke(key_id)
    dash.sessions.end_for_key(key_id)
    if key_id == session.key_id:
        return _logged_out()
    return see_other("/keys")


@router.post("/keys/{key_id}/rotate")
async def rotate_key(request: Request, key_id: str, session: Checked) -> Response:
    _require_admin(session)
    dash = dashboard_of(request)
    new = await dash.ctx.keys.rotate(key_id)
    dash.sessions.end_for_key(key_id)
    if key_id == session.key_id:
        # This session's key changed: the new secret is shown, and the next page asks for it.
        response = await _page(request, shown=new, rotated_self=True)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
    return await _page(request, shown=new)


# ---- helpers ----------------------------------------------------------------------------
def _require_admin(session: Session) -> None:
    if not session.can("admin"):
        raise ForbiddenError("managing API keys needs an API key with the admin scope")


async def _page(
    request: Request,
    *,
    status: str = "",
    shown: NewKey | None = None,
    error: str = "",
    status_code: int = 200,
    rotated_self: bool = False,
) -> Response:
    records = await dashboard_of(request).ctx.keys.list()
    keys = [KeyPublic.of(r) for r in records]
    if status:
        keys = [k for k in keys if k.status == status]
    return render(
        request,
        "keys.html",
        status_code=status_code,
        keys=keys,
        status=status,
        statuses=_STATUSES,
        scopes=_SCOPES,
        shown=KeyPublic.of(shown.record) if shown is not None else None,
        shown_secret=shown.key if shown is not None else "",
        error=error,
        rotated_self=rotated_self,
    )


def _logged_out() -> Response:
    response = see_other("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])
