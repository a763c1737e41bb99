"""What every dashboard page shares: the per-app :class:`Dashboard` (templates, sessions,
metrics history), the session and CSRF dependencies, HTML rendering with safe headers, and
:class:`DashboardRoute`, which answers errors as HTML pages instead of problem+json.

A page without a live session redirects to ``/login`` (htmx requests get ``HX-Redirect``
instead, so a fragment never turns into a login form); a state-changing request whose CSRF
token is missing or wrong is refused 403 before the handler runs.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import structlog
from fastapi import Depends, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from arbor.core.errors import ArborError, InvalidRequestError, NotFoundError
from arbor.service.context import ServiceContext
from arbor.service.dashboard.charts import MetricsHistory
from arbor.service.dashboard.sessions import (
    LoginThrottle,
    Session,
    SessionStore,
    Signer,
    tokens_match,
)
from arbor.service.errors import ForbiddenError
from arbor.service.problems import problem_for

__all__ = [
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "CSRFError",
    "Checked",
    "Dashboard",
    "DashboardRoute",
    "LoginRequired",
    "Viewer",
    "dashboard_of",
    "page_url",
    "render",
    "see_other",
    "status_filter",
    "template_environment",
]

log = structlog.get_logger("arbor.service.dashboard")

StatusT = TypeVar("StatusT", bound=str)

SESSION_COOKIE = "arbor_session"
LOGIN_COOKIE = "arbor_login"
#: Everything the pages load comes from this server; no inline scripts or styles.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": _CSP,
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


class LoginRequired(ArborError):
    """No live session: the page redirects to the login form."""

    kind = "login_required"


class CSRFError(ForbiddenError):
    """A state-changing request without the session's CSRF token."""

    kind = "csrf"


class Dashboard:
    """One app's dashboard state: made on first use and kept on ``app.state``."""

    def __init__(self, ctx: ServiceContext) -> None:
        secret = ctx.settings.service.session_secret
        self.ctx = ctx
        self.signer = Signer(secret.get_secret_value() if secret is not None else None)
        self.sessions = SessionStore()
        self.throttle = LoginThrottle()
        self.history = MetricsHistory()
        self.templates = template_environment()


def template_environment() -> Environment:
    """The pages' Jinja environment: autoescaped, strict about undefined names, with the
    ``when``, ``number`` and ``usd`` filters."""
    env = Environment(
        loader=PackageLoader("arbor.service.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["number"] = _number
    env.filters["usd"] = _usd
    return env


def dashboard_of(request: Request) -> Dashboard:
    """The dashboard of the app serving ``request`` (created the first time)."""
    state = request.app.state
    dash = getattr(state, "dashboard", None)
    if dash is None or dash.ctx is not state.ctx:
        dash = state.dashboard = Dashboard(state.ctx)
    assert isinstance(dash, Dashboard)
    return dash


async def current_session(request: Request) -> Session:
    """The request's live session; LoginRequired when there is none, or when the key it was
    opened with has since been revoked, rotated or has expired."""
    dash = dashboard_of(request)
    session_id = dash.signer.unsign("session", request.cookies.get(SESSION_COOKIE))
    session = dash.sessions.get(session_id) if session_id else None
    if session is None:
        raise LoginRequired("log in to continue")
    try:
        record = await dash.ctx.keys.get(session.key_id)
    except NotFoundError:
        record = None
    if record is None or record.status() != "active" or record.prefix != session.key_prefix:
        dash.sessions.end(session.id)
        raise LoginRequired("the API key of this session is no longer valid")
    request.state.session = session
    return session


Viewer = Annotated[Session, Depends(current_session)]


async def checked_session(
    request: Request,
    session: Viewer,
    csrf_token: Annotated[str | None, Form()] = None,
) -> Session:
    """The session of a state-changing request that proved it came from our own page."""
    given = request.headers.get("x-csrf-token") or csrf_token
    if not tokens_match(given, session.csrf_token):
        raise CSRFError("missing or invalid CSRF token; reload the page and try again")
    return session


Checked = Annotated[Session, Depends(checked_session)]


def render(
    request: Request, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """A page (or fragment) rendered with the session's name, scopes and CSRF token."""
    dash = dashboard_of(request)
    session = getattr(request.state, "session", None)
    html = dash.templates.get_template(template).render(
        session=session,
        csrf_token=session.csrf_token if session is not None else "",
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers=_SECURITY_HEADERS)


def page_url(request: Request) -> str:
    """The path and query of ``request``: what a page polls to refresh itself, and where a
    login sends the person back to."""
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def status_filter(status: str, allowed: Sequence[StatusT]) -> StatusT | None:
    """A list page's ``status`` query parameter: None (any status) when empty, else the one
    of ``allowed`` it names."""
    if not status:
        return None
    for known in allowed:
        if known == status:
            return known
    raise InvalidRequestError(f"status: must be one of {', '.join(allowed)}")


def see_other(url: str) -> RedirectResponse:
    """After a successful POST: a GET of ``url`` (no resubmission on reload)."""
    return RedirectResponse(url, status_code=303)


class DashboardRoute(APIRoute):
    """Answers a dashboard route's errors in HTML: login redirects, and error pages with
    the status the API would use (the detail passes through the service's redactor)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def html_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                return _to_login(request)
            except ArborError as exc:
                problem = problem_for(exc)
                return _error_page(request, problem.status, problem.detail)
            except RequestValidationError as exc:
                return _error_page(request, 422, _validation_message(exc))
            except Exception:  # a bug: logged with its trace, a plain page for the person
                log.exception("dashboard.unhandled_error", path=request.url.path)
                return _error_page(request, 500, "internal error")

        return html_errors


def _to_login(request: Request) -> Response:
    target = page_url(request)
    url = "/login" if target == "/" else f"/login?next={quote(target, safe='/')}"
    if request.headers.get("hx-request") == "true":
        return Response(status_code=401, headers={"HX-Redirect": url})
    if "text/event-stream" in request.headers.get("accept", ""):
        return Response("log in first", status_code=401, media_type="text/plain")
    return RedirectResponse(url, status_code=302)


def _error_page(request: Request, status: int, detail: str) -> Response:
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is not None:
        detail = ctx.redactor.text(detail)
    if status >= 500 and detail != "internal error":
        log.error("dashboard.error", path=request.url.path, status=status, detail=detail)
    return render(request, "error.html", status_code=status, status=status, detail=detail)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


# ---- template filters -------------------------------------------------------------------
def _when(value: datetime | float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _usd(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"
