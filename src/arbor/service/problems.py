"""Every error answer is ``application/problem+json`` (RFC 9457): ``type``, ``title``,
``status``, ``detail`` and the ``request_id`` of the request, so a user can quote one id.

Routes raise :class:`~arbor.core.errors.ArborError` subclasses and never build error responses;
the handlers installed by :func:`install_problem_handlers` map them:

- 401 ``AuthError`` (with ``WWW-Authenticate: Bearer``); 403 ``ForbiddenError`` (a valid
  key without the scope)
- 404 ``NotFoundError``, ``UnknownModelError``
- 422 ``InvalidRequestError`` and validation failures (field errors listed, input never
  echoed); 409 ``ConflictError``, ``WorkflowError`` and errors of kind ``conflict``
- 413 ``PayloadTooLargeError``; 400 ``ContextTooLongError``, ``TokenLimitError``
- 429 ``RequestRateLimitedError`` and an upstream ``RateLimitedError``, with ``Retry-After``
  in whole seconds (at least 1)
- 402 ``BudgetExceededError`` — not 429: waiting does not help, and clients (the openai SDK)
  retry 429s automatically
- 503 ``CircuitOpenError`` and an unreachable shared limiter (``limiter_unavailable``);
  504 ``LLMTimeoutError``; 502 any other ``ProviderError``
- 500 ``ConfigError`` (names the variable, never a value); anything else 500 "internal
  error", logged with its trace by the request middleware

Details pass through the app's :class:`~arbor.core.logging.Redactor`, so an upstream body or
a message quoting a key cannot carry a secret out. The OpenAI-compatible paths
(:data:`OPENAI_PATHS`) answer the same errors in OpenAI's shape ``{"error": {"message",
"type", "code", "param"}}`` so OpenAI clients show them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from arbor.core.errors import (
    ArborError,
    AuthError,
    BudgetExceededError,
    CircuitOpenError,
    ConfigError,
    ConflictError,
    ContextTooLongError,
    InvalidRequestError,
    LLMTimeoutError,
    NotFoundError,
    ProviderError,
    RateLimitedError,
    UnknownModelError,
    WorkflowError,
)
from arbor.core.logging import Redactor
from arbor.service.errors import ForbiddenError, PayloadTooLargeError, RequestRateLimitedError

__all__ = [
    "OPENAI_ERROR_RESPONSES",
    "OPENAI_PATHS",
    "PROBLEM_JSON",
    "PROBLEM_RESPONSES",
    "OpenAIErrorBody",
    "Problem",
    "ProblemDetails",
    "install_problem_handlers",
    "problem_for",
    "problem_response",
    "render_problem",
]

PROBLEM_JSON = "application/problem+json"
#: Paths whose errors use OpenAI's error shape instead of problem+json.
OPENAI_PATHS = ("/v1/chat/completions", "/v1/models", "/v1/embeddings")

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# Error kinds raised by other layers, by status (mostly the caller's fault).
_KIND_STATUS = {
    "limiter_unavailable": 503,
    "conflict": 409,
    "agent_disabled": 409,
    "invalid_definition": 422,
    "invalid_input": 422,
    "unknown_role": 422,
    "unsupported": 400,
    "token_limit": 400,
}
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ProblemDetails(BaseModel):
    """The body of every error answer (for the OpenAPI schema; rendering is by hand)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    request_id: str | None
    #: Validation failures: ``loc``, ``msg`` and ``type`` of each field error.
    errors: list[dict[str, Any]] | None = None


def _documented(description: str) -> dict[str, Any]:
    schema = {"schema": ProblemDetails.model_json_schema()}
    return {"description": description, "content": {PROBLEM_JSON: schema}}


#: OpenAPI ``responses`` for routers whose errors are problem+json (``create_app`` adds them
#: to every router outside :data:`OPENAI_PATHS`); also replaces FastAPI's default 422 schema.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _documented("Missing, invalid, expired or revoked API key"),
    403: _documented("The API key lacks the scope"),
    422: _documented("Invalid request"),
    429: _documented("The API key's requests per minute are used up (see Retry-After)"),
    "default": _documented("Any other error"),
}


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None
    param: str | None


class OpenAIErrorBody(BaseModel):
    """The body of every error answer on :data:`OPENAI_PATHS` (OpenAI's shape)."""

    error: OpenAIErrorDetail


def _openai_documented(description: str) -> dict[str, Any]:
    return {"description": description, "model": OpenAIErrorBody}


#: OpenAPI ``responses`` for the OpenAI-compatible routers: their errors in OpenAI's shape,
#: with the statuses OpenAI clients expect (400 where the rest of the API says 422).
OPENAI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _openai_documented("Invalid request"),
    401: _openai_documented("Missing, invalid, expired or revoked API key"),
    402: _openai_documented("The API key's budget is spent"),
    403: _openai_documented("The API key lacks the scope"),
    404: _openai_documented("Unknown model"),
    429: _openai_documented("Rate limited (see Retry-After)"),
    "default": _openai_documented("Any other error (502/503/504 for upstream trouble)"),
}


@dataclass(frozen=True, slots=True)
class Problem:
    """An error answer before rendering."""

    status: int
    detail: str
    kind: str = "error"
    headers: dict[str, str] = field(default_factory=dict)
    #: Field errors of a validation failure (``loc``, ``msg``, ``type``), never the input.
    errors: list[dict[str, Any]] | None = None
    #: The offending field, when there is one (OpenAI's ``param``).
    param: str | None = None
    #: More members of the problem object (e.g. readiness checks).
    extra: dict[str, Any] | None = None

    @property
    def title(self) -> str:
        return _TITLES.get(self.status, "Error")


def problem_for(exc: ArborError) -> Problem:
    """The status, detail and headers an ArborError is answered with."""
    status, headers = _status(exc)
    if isinstance(exc, ConfigError):
        where = f" ({exc.variable})" if exc.variable else ""
        return Problem(500, f"server configuration error{where}", exc.kind)
    if status == 500:
        return Problem(500, "internal error", exc.kind)
    if isinstance(exc, AuthError) and not isinstance(exc, ForbiddenError):
        headers["WWW-Authenticate"] = "Bearer"
    param = exc.param if isinstance(exc, InvalidRequestError) else None
    return Problem(status, exc.message, exc.kind, headers, param=param)


def _status(exc: ArborError) -> tuple[int, dict[str, str]]:  # noqa: C901 - a flat table
    if isinstance(exc, ForbiddenError):
        return 403, {}
    if isinstance(exc, AuthError):
        return 401, {}
    if isinstance(exc, NotFoundError | UnknownModelError):
        return 404, {}
    if isinstance(exc, InvalidRequestError):
        return 422, {}
    if isinstance(exc, ConflictError | WorkflowError):
        return 409, {}
    if isinstance(exc, PayloadTooLargeError):
        return 413, {}
    if isinstance(exc, RequestRateLimitedError | RateLimitedError):
        return 429, {"Retry-After": str(max(1, math.ceil(exc.retry_after or 1.0)))}
    if isinstance(exc, BudgetExceededError):
        return 402, {}
    if isinstance(exc, ContextTooLongError):
        return 400, {}
    if isinstance(exc, CircuitOpenError):
        return 503, {}
    if isinstance(exc, LLMTimeoutError):
        return 504, {}
    if isinstance(exc, ProviderError):
        return 502, {}
    return _KIND_STATUS.get(exc.kind, 500), {}


def render_problem(
    problem: Problem, *, request_id: str | None, path: str, redactor: Redactor | None = None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, raw headers and body: usable from a handler and from pure ASGI middleware."""
    detail = (redactor or _DEFAULT_REDACTOR).text(problem.detail)
    if path.startswith(OPENAI_PATHS):
        error = {
            "message": detail,
            "type": _OPENAI_TYPES.get(problem.status, "api_error"),
            "code": problem.kind,
            "param": problem.param,
        }
        body = orjson.dumps({"error": error})
        content_type = b"application/json"
    else:
        data: dict[str, Any] = {
            "type": f"urn:arbor:problem:{problem.kind}",
            "title": problem.title,
            "status": problem.status,
            "detail": detail,
            "request_id": request_id,
        }
        if problem.errors is not None:
            data["errors"] = problem.errors
        if problem.extra:
            data.update({k: v for k, v in problem.extra.items() if k not in data})
        body = orjson.dumps(data)
        content_type = PROBLEM_JSON.encode()
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in problem.headers.items()]
    return problem.status, headers, body


_DEFAULT_REDACTOR = Redactor()


def problem_response(request: Request, problem: Problem) -> Response:
    """A rendered problem for a handler that must answer an error without raising (e.g. a
    readiness check reporting its findings)."""
    return _response(request, problem)


def _response(request: Request, problem: Problem) -> Response:
    redactor = getattr(request.app.state, "redactor", None)
    status, headers, body = render_problem(
        problem, request_id=_request_id(request), path=request.url.path, redactor=redactor
    )
    response = Response(body, status_code=status)
    response.raw_headers = headers  # content-type and length included
    return response


def _request_id(request: Request) -> str | None:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else None


def _field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        out.append({"loc": loc, "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))})
    return out


def _validation_problem(errors: Sequence[Any]) -> Problem:
    fields = _field_errors(errors)
    first = fields[0] if fields else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"])
    detail = f"{where}: {first['msg']}" if where else str(first["msg"])
    if len(fields) > 1:
        detail += f" (and {len(fields) - 1} more)"
    param = first["loc"][-1] if first["loc"] else None
    return Problem(422, detail, "validation", errors=fields, param=param)


async def _arbor_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ArborError)
    return _response(request, problem_for(exc))


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _response(request, _validation_problem(exc.errors()))


async def _pydantic_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return _response(request, _validation_problem(exc.errors(include_input=False)))


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
    headers = dict(exc.headers or {})
    kind = "not_found" if exc.status_code == 404 else "http"
    return _response(request, Problem(exc.status_code, detail, kind, headers))


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app`` (unexpected exceptions are answered by the request
    middleware, which also logs them)."""
    app.add_exception_handler(ArborError, _arbor_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _pydantic_validation)
    app.add_exception_handler(HTTPException, _http_exception)
