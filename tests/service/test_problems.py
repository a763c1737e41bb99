from __future__ import annotations

import orjson
import pytest

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
    ProviderConnectionError,
    ProviderHTTPError,
    RateLimitedError,
    UnknownModelError,
    WorkflowError,
)
from arbor.core.logging import Redactor
from arbor.llm._redis_limiter import LimiterUnavailableError
from arbor.service.errors import ForbiddenError, PayloadTooLargeError, RequestRateLimitedError
from arbor.service.problems import Problem, problem_for, render_problem
from arbor.store import AgentExistsError


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (AuthError("no key"), 401),
        (ForbiddenError("no scope"), 403),
        (NotFoundError("gone"), 404),
        (UnknownModelError("which model"), 404),
        (InvalidRequestError("bad", param="messages"), 422),
        (ConflictError("clash"), 409),
        (AgentExistsError("taken", name="a"), 409),
        (WorkflowError("not paused", run_id="run_1"), 409),
        (PayloadTooLargeError("big", limit=1), 413),
        (BudgetExceededError("spent", scope="key:k"), 402),
        (ContextTooLongError("long", status_code=400), 400),
        (CircuitOpenError("open"), 503),
        (LimiterUnavailableError("redis down"), 503),
        (LLMTimeoutError("slow"), 504),
        (ProviderHTTPError("upstream 500", status_code=500), 502),
        (ProviderConnectionError("reset"), 502),
        (ArborError("something odd"), 500),
    ],
)
def test_statuses(error: ArborError, status: int) -> None:
    assert problem_for(error).status == status


def test_429s_carry_retry_after_in_whole_seconds() -> None:
    assert problem_for(RequestRateLimitedError("x", retry_after=0.2)).headers == {
        "Retry-After": "1"
    }
    upstream = RateLimitedError("x", status_code=429, retry_after=7.5)
    problem = problem_for(upstream)
    assert problem.status == 429 and problem.headers["Retry-After"] == "8"
    assert problem_for(AuthError("x")).headers == {"WWW-Authenticate": "Bearer"}


def test_internal_and_config_errors_say_nothing_secret() -> None:
    leaked = ConfigError("password=hunter2 is wrong", variable="ARBOR_DATABASE_URL")
    problem = problem_for(leaked)
    assert problem.status == 500 and "hunter2" not in problem.detail
    assert "ARBOR_DATABASE_URL" in problem.detail
    assert problem_for(ArborError("db at postgres://u:pw@h")).detail == "internal error"


def test_details_are_redacted() -> None:
    upstream = ProviderHTTPError("upstream said: bad key sk-abcdef123456", status_code=401)
    problem = problem_for(upstream)
    _, _, body = render_problem(problem, request_id="req_1", path="/v1/runs")
    assert b"sk-abcdef123456" not in body
    redactor = Redactor(["configured-secret-value"])
    problem = Problem(502, "echo configured-secret-value", "http")
    _, _, body = render_problem(problem, request_id=None, path="/x", redactor=redactor)
    assert b"configured-secret-value" not in body


def test_problem_json_and_openai_shapes() -> None:
    problem = problem_for(InvalidRequestError("messages must not be empty", param="messages"))
    status, headers, body = render_problem(problem, request_id="req_9", path="/v1/runs")
    assert status == 422 and (b"content-type", b"application/problem+json") in headers
    assert orjson.loads(body) == {
        "type": "urn:arbor:problem:invalid_request",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "messages must not be empty",
        "request_id": "req_9",
    }
    status, headers, body = render_problem(problem, request_id="req_9", path="/v1/chat/completions")
    assert (b"content-type", b"application/json") in headers
    assert orjson.loads(body) == {
        "error": {
            "message": "messages must not be empty",
            "type": "invalid_request_error",
            "code": "invalid_request",
            "param": "messages",
        }
    }
    _, headers, body = render_problem(
        problem_for(RequestRateLimitedError("slow down", retry_after=3)),
        request_id=None,
        path="/v1/models",
    )
    assert (b"retry-after", b"3") in headers
    assert orjson.loads(body)["error"]["type"] == "rate_limit_error"
