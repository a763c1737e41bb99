from __future__ import annotations

import io
import json
import logging

import pytest

from arbor.core.logging import Redactor, bound_contextvars, configure_logging, get_logger

SECRETS = [
    "sk-proj-AbCdEf1234567890xyz",
    "arb_live_0123456789abcdef",
    "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
    "jane.doe@example.com",
    "configured-key-value-42",
]


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("debug", "json", secrets=["configured-key-value-42"], stream=stream)
    yield stream
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_arbor", False):
            root.removeHandler(h)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_no_secret_substring_in_any_record(captured: io.StringIO) -> None:
    log = get_logger("arbor.test")
    log.info("calling with " + " ".join(SECRETS))
    log.info("kv", api_key="plain-secret-1", headers={"Authorization": "Bearer abcdef123456"})
    log.info("url", dsn="postgresql://arbor:hunter2pass@db:5432/x")
    logging.getLogger("uvicorn.error").warning("stdlib %s", SECRETS[0])
    try:
        raise RuntimeError(f"upstream rejected {SECRETS[0]}")
    except RuntimeError:
        log.exception("failed")
    out = captured.getvalue()
    for s in [*SECRETS, "plain-secret-1", "abcdef123456", "hunter2pass", "eyJhbGci"]:
        assert s not in out, s
    records = _lines(captured)
    assert len(records) == 5
    assert records[1]["api_key"] == "***"


def test_request_ids_flow_from_contextvars(captured: io.StringIO) -> None:
    with bound_contextvars(request_id="req_123"):
        get_logger("arbor.test").info("inside")
    get_logger("arbor.test").info("outside")
    inside, outside = _lines(captured)
    assert inside["request_id"] == "req_123"
    assert "request_id" not in outside


def test_redactor_keeps_ordinary_text() -> None:
    r = Redactor()
    text = "model gpt-4o answered in 120 ms with 42 tokens; task-skipping is fine"
    assert r.text(text) == text
    assert r.value({"input_tokens": 5, "token_count": 3}) == {"input_tokens": 5, "token_count": 3}
    assert r.value({"x_api_key": "abc", "session": "s1"}) == {"x_api_key": "***", "session": "***"}


def test_placeholders_and_prose_about_auth_are_not_secrets() -> None:
    r = Redactor()
    for text in (
        "missing API key: send 'Authorization: Bearer <API key>'",
        "invalid Authorization header: expected 'Bearer <API key>'",
        "use Bearer authentication; bearer tokens expire",
        "Authorization: Bearer",
        "api_key=***",
    ):
        assert r.text(text) == text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcdef123456", "abcdef123456"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGci"),
        ("basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),  # base64 of user:pass, no digit
        ("Bearer abcdefghijklmnopqrstuvwx", "abcdefghijklmnop"),  # long, all lower case
        ("headers={'Authorization': 'Bearer tok3n-value'}", "tok3n-value"),
        ("authorization: 8f14e45fceea167a5a36", "8f14e45fceea"),
        ("password=hunter2", "hunter2"),
    ],
)
def test_real_tokens_are_still_masked(text: str, secret: str) -> None:
    out = Redactor().text(text)
    assert secret not in out and "***" in out
    assert out.lower().startswith(text.lower()[:6])  # the scheme or key name stays readable
