"""Logging in to the dashboard with an API key, and out again.

The key is checked against the store once (hash lookup, constant-time compare) and then
forgotten: the browser gets only the signed session cookie (HttpOnly, SameSite=Strict, Secure
over https). A wrong key gets the same one-line answer whatever was wrong with it, and the
value is never echoed; a client with too many failures in a minute waits (429). ``next`` is
followed only to a path on this site.
"""

from __future__ import annotations

import math
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from arbor.core.errors import AuthError
from arbor.service.dashboard.sessions import tokens_match
from arbor.service.dashboard.web import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Checked,
    DashboardRoute,
    LoginRequired,
    current_session,
    dashboard_of,
    render,
    see_other,
)

__all__ = ["router", "safe_next"]

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

_MAX_KEY = 1024
_LOGIN_SECONDS = 3600


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/`` (no open redirects)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or any(c in target for c in "\\\r\n\t")
        or len(target) > 2000
    ):
        return "/"
    return target


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    try:
        await current_session(request)
    except LoginRequired:
        return _form(request, safe_next(next))
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/login")
async def login(
    request: Request,
    api_key: Annotated[str, Form()] = "",
    login_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    dash = dashboard_of(request)
    nonce = dash.signer.unsign("login", request.cookies.get(LOGIN_COOKIE))
    if nonce is None or not tokens_match(login_token, nonce):
        return _form(
            request, safe_next(next), "The login form expired; please try again.", status=403
        )
    client = request.client.host if request.client is not None else "?"
    wait = dash.throttle.wait(client)
    if wait > 0:
        message = f"Too many failed logins; try again in {math.ceil(wait)} s."
        answer = _form(request, safe_next(next), message, status=429)
        answer.headers["Retry-After"] = str(math.ceil(wait))
        return answer
    key = api_key.strip()
    if not key or len(key) > _MAX_KEY:
        return _form(request, safe_next(next), "Enter an API key.", status=401)
    try:
        record = await dash.ctx.keys.verify(key)
    except AuthError:
        dash.throttle.failed(client)
        return _form(request, safe_next(next), "That API key is not valid.", status=401)
    dash.throttle.succeeded(client)
    session = dash.sessions.create(record)
    response = see_other(safe_next(next))
    response.set_cookie(
        SESSION_COOKIE,
        dash.signer.sign("session", session.id),
        max_age=int(dash.sessions.ttl),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, session: Checked) -> Response:
    dashboard_of(request).sessions.end(session.id)
    response = see_other("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _form(request: Request, next_url: str, error: str = "", *, status: int = 200) -> Response:
    """The login form with a fresh double-submit nonce (cookie + hidden field)."""
    dash = dashboard_of(request)
    nonce = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        status_code=status,
        login_token=nonce,
        next=next_url,
        error=error,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        dash.signer.sign("login", nonce),
        max_age=_LOGIN_SECONDS,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response
