"""Pure ASGI middleware (no ``BaseHTTPMiddleware``: it costs a task and a queue per request).

- :class:`RequestMiddleware` — the request id (``X-Request-ID`` in, if well-formed, else a
  new one; always out), bound into structlog's contextvars so every log line of the request
  carries it; HTTP metrics by route template; and the last line of defence: an unexpected
  exception is logged with its trace and answered 500 problem+json, never a traceback.
- :class:`BodyLimitMiddleware` — refuses bodies over ``max_body_bytes`` with 413: at once by
  ``Content-Length``, or while reading a chunked body; and headers over ``max_header_bytes``
  in total with 431 (uvicorn's httptools parser accepts headers of any size).
"""

from __future__ import annotations

import re
import time
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arbor.core.ids import new_id
from arbor.core.logging import bound_contextvars
from arbor.service.http_metrics import UNMATCHED_ROUTE
from arbor.service.problems import Problem, render_problem

__all__ = ["BodyLimitMiddleware", "RequestMiddleware"]

log = structlog.get_logger("arbor.service.http")

# A caller-supplied id is kept only if it cannot forge log lines or headers.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                return None
            return text if _REQUEST_ID.fullmatch(text) else None
    return None


class RequestMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = _incoming_id(scope) or new_id("req")
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode("ascii"))
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        with bound_contextvars(request_id=rid):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                log.exception("http.unhandled_error", method=scope["method"], path=scope["path"])
                if response_started:
                    raise
                await self._internal_error(scope, rid, send_with_id)
            finally:
                self._observe(scope, status, time.perf_counter() - started)

    @staticmethod
    async def _internal_error(scope: Scope, rid: str, send: Send) -> None:
        ctx = getattr(scope["app"].state, "ctx", None)
        status, headers, body = render_problem(
            Problem(500, "internal error", "internal"),
            request_id=rid,
            path=scope["path"],
            redactor=getattr(ctx, "redactor", None),
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _observe(scope: Scope, status: int, seconds: float) -> None:
        ctx: Any = getattr(scope["app"].state, "ctx", None)
        if ctx is None:
            return
        route = scope.get("route")
        path = getattr(route, "path", None) or UNMATCHED_ROUTE
        ctx.http_metrics.observe(scope["method"], path, status, seconds)


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, max_body_bytes: int, max_header_bytes: int | None = None
    ) -> None:
        self.app = app
        self.limit = max_body_bytes
        self.header_limit = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.header_limit is not None:
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.header_limit:
                detail = f"request headers are larger than the limit of {self.header_limit} bytes"
                await self._refuse(scope, send, Problem(431, detail, "headers_too_large"))
                return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    detail = f"request body is larger than the limit of {self.limit} bytes"
                    await self._refuse(scope, send, Problem(413, detail, "payload_too_large"))
                    return
                break
        limit = self.limit
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException passes FastAPI's body parsing unchanged -> 413 problem.
                    raise _TooLarge(limit)
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: Scope, send: Send, problem: Problem) -> None:
        ctx = getattr(scope["app"].state, "ctx", None)
        rid = scope.get("state", {}).get("request_id")
        status, headers, body = render_problem(
            problem,
            request_id=rid,
            path=scope["path"],
            redactor=getattr(ctx, "redactor", None),
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
