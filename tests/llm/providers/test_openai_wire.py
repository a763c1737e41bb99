"""The OpenAI wire format by hand (``_wire``) and error translation (``_errors``), no HTTP."""

from __future__ import annotations

import itertools
import json

import aiohttp
import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbor.core.errors import (
    ContextTooLongError,
    LLMTimeoutError,
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
)
from arbor.llm.providers._errors import BODY_LIMIT, http_error, mask, translate
from arbor.llm.providers._wire import (
    DONE,
    SSEParser,
    chat_body,
    finish_reason,
    parse_completion,
    parse_delta,
    parse_usage,
)
from arbor.llm.types import ChatRequest, Message

EVENTS = [b'{"a":1}', b'{"b":"x\\ny"}', DONE]
STREAM = b"".join(b"data: " + e + b"\n\n" for e in EVENTS)


def feed_all(parser: SSEParser, pieces: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for p in pieces:
        out += parser.feed(p)
    return out + parser.close()


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_sse_events_survive_any_split(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    assert feed_all(SSEParser(), pieces) == EVENTS


def test_sse_crlf_comments_fields_and_multiline_data() -> None:
    raw = b": ping\r\n\r\nevent: message\r\nid: 7\r\ndata: line1\r\ndata:line2\r\n\r\ndata: x\n\n"
    assert feed_all(SSEParser(), [raw]) == [b"line1\nline2", b"x"]


def test_sse_close_flushes_an_unterminated_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: last") == []
    assert parser.close() == [b"last"]
    assert parser.close() == []


def test_chat_body_content_rules() -> None:
    req = ChatRequest(
        model="p:m",
        messages=[Message(role="user", content=None), Message.assistant("hi")],
    )
    body = chat_body(req, "m", stream=True)
    assert body["messages"] == [
        {"role": "user", "content": ""},  # only a tool-calling assistant turn may be null
        {"role": "assistant", "content": "hi"},
    ]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_keywords_pass_through(choice: str) -> None:
    req = ChatRequest(model="p:m", messages=[Message.user("x")], tool_choice=choice)
    assert chat_body(req, "m", stream=False)["tool_choice"] == choice


@pytest.mark.parametrize(
    ("wire", "ours"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("function_call", "tool_calls"),
        ("eos", None),
        (None, None),
    ],
)
def test_finish_reasons(wire: str | None, ours: str | None) -> None:
    assert finish_reason(wire) == ours


def test_parse_completion_content_parts_and_refusal() -> None:
    parts = {
        "choices": [
            {"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}
        ]
    }
    reply, has_usage = parse_completion(parts, "m")
    assert (reply.text, reply.model, has_usage) == ("ab", "m", False)
    refusal = {"choices": [{"message": {"content": None, "refusal": "I can't"}}]}
    assert parse_completion(refusal, "m")[0].text == "I can't"


@pytest.mark.parametrize("data", [{}, {"choices": []}, {"choices": [{"message": 3}]}, [1]])
def test_parse_completion_rejects_malformed(data: object) -> None:
    with pytest.raises(ProviderError, match="malformed"):
        parse_completion(data, "m")


def test_parse_usage_and_delta() -> None:
    assert parse_usage(None) is None
    u = parse_usage({"prompt_tokens": 5, "completion_tokens": None})
    assert u is not None and (u.input_tokens, u.output_tokens, u.cached_input_tokens) == (5, 0, 0)
    c = parse_delta({"delta": {"refusal": "no"}, "finish_reason": "content_filter"}, "id", "m")
    assert (c.content, c.finish_reason, c.id) == ("no", "content_filter", "id")


# ---- errors ------------------------------------------------------------------------------
def test_mask() -> None:
    assert mask("key sk-1 and sk-1", "sk-1") == "key *** and ***"
    assert mask("nothing", None) == "nothing"


def test_http_error_masks_before_truncating() -> None:
    secret = "sk-ABCDEFGHIJKLMNOP"
    body = "x" * (BODY_LIMIT - 5) + secret
    err = http_error(500, body, {}, provider="p", model="m", secret=secret)
    assert len(err.body) <= BODY_LIMIT
    assert err.body.endswith("x***")
    assert "sk-AB" not in err.body  # truncating first would have kept a prefix of the key


def test_http_error_plain_text_body() -> None:
    err = http_error(
        503, "Service Unavailable", {"Retry-After": "2"}, provider="p", model="m", secret=None
    )
    assert type(err) is ProviderHTTPError
    assert (err.retry_after, err.retriable) == (2.0, True)
    assert "Service Unavailable" in str(err)


def test_context_error_needs_a_client_status() -> None:
    body = json.dumps({"error": {"message": "maximum context length exceeded", "code": None}})
    assert isinstance(
        http_error(400, body, {}, provider="p", model="m", secret=None), ContextTooLongError
    )
    assert not isinstance(
        http_error(500, body, {}, provider="p", model="m", secret=None), ContextTooLongError
    )


def chained(*excs: BaseException) -> Exception:
    """``excs[0]`` raised from ``excs[1]`` raised from ...: how the transport wraps errors."""
    for outer, inner in itertools.pairwise(excs):
        outer.__cause__ = inner
    first = excs[0]
    assert isinstance(first, Exception)
    return first


@pytest.mark.parametrize(
    ("exc", "kind", "phase"),
    [
        # aiohttp's own errors under httpx2's: the deepest one decides
        (chained(httpx2.ConnectTimeout("x"), aiohttp.ServerDisconnectedError()), "conn", None),
        (chained(httpx2.ConnectTimeout("x"), aiohttp.SocketTimeoutError()), "timeout", "read"),
        (
            chained(httpx2.ConnectTimeout("x"), aiohttp.ConnectionTimeoutError()),
            "timeout",
            "connect",
        ),
        (httpx2.ReadTimeout("x"), "timeout", "read"),
        (httpx2.ConnectError("refused"), "conn", None),
        (chained(httpx2.ReadError("x"), aiohttp.ClientPayloadError("cut")), "conn", None),
        (ConnectionResetError("reset"), "conn", None),
        (RuntimeError("weird"), "other", None),
    ],
)
def test_translate_classifies_by_deepest_cause(
    exc: Exception, kind: str, phase: str | None
) -> None:
    err = translate(exc, provider="p", model="m", secret=None)
    expected = {"conn": ProviderConnectionError, "timeout": LLMTimeoutError, "other": ProviderError}
    assert type(err) is expected[kind]
    if phase is not None:
        assert isinstance(err, LLMTimeoutError) and err.phase == phase


def test_read_timeout_in_a_stream_body_is_stream_idle() -> None:
    err = translate(
        httpx2.ReadTimeout("x"), provider="p", model="m", secret=None, in_stream_body=True
    )
    assert isinstance(err, LLMTimeoutError) and err.phase == "stream_idle"


def test_translate_masks_the_key_in_transport_messages() -> None:
    err = translate(
        httpx2.ConnectError("bad url http://u:sk-9@h"), provider="p", model="m", secret="sk-9"
    )
    assert "sk-9" not in str(err)
