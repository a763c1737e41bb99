"""OpenAICompatibleModel against real HTTP servers on loopback (see conftest.py)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from upstream_server import Upstream, chunk, completion, sse

from arbor.core.config import ProviderSettings, TimeoutSettings
from arbor.core.errors import (
    ContextTooLongError,
    LLMTimeoutError,
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    RateLimitedError,
)
from arbor.llm.model import Model
from arbor.llm.providers.openai import OpenAICompatibleModel, ProviderClients
from arbor.llm.types import ChatRequest, Message, StreamChunk, ToolCall, ToolSpec

KEY = "sk-test-SECRET-0123456789abcdef"
Factory = Callable[..., OpenAICompatibleModel]


@pytest.fixture
async def make(upstream: Upstream) -> AsyncIterator[Factory]:
    made: list[OpenAICompatibleModel] = []

    def factory(
        name: str = "gpt-4o", url: str | None = None, **timeouts: float
    ) -> OpenAICompatibleModel:
        settings = ProviderSettings(
            base_url=url or upstream.url, api_key=KEY, headers={"X-Arbor-Test": "yes"}
        )
        model = OpenAICompatibleModel("up", name, settings, TimeoutSettings(**timeouts))
        made.append(model)
        return model

    yield factory
    for model in made:
        await model.aclose()


def req(text: str = "hi", **kw: Any) -> ChatRequest:
    return ChatRequest(model="up:gpt-4o", messages=[Message.user(text)], **kw)


def reply(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status, headers=headers)

    return handler


async def collect(model: Model, request: ChatRequest) -> list[StreamChunk]:
    return [c async for c in model.stream(request)]


# ---- protocol and request mapping ----------------------------------------------------------
async def test_implements_the_model_protocol(make: Factory) -> None:
    assert isinstance(make(), Model)


async def test_request_body_maps_every_option(upstream: Upstream, make: Factory) -> None:
    upstream.handler = reply(completion(usage={"prompt_tokens": 1, "completion_tokens": 1}))
    messages = [
        Message.system("be brief"),
        Message.user("weather?"),
        Message.assistant(None, [ToolCall(id="c1", name="weather", arguments='{"city":"Paris"}')]),
        Message.tool("c1", "sunny"),
        Message(role="user", content="thanks", name="ann"),
    ]
    tool = ToolSpec(name="weather", description="Look up weather", parameters={"type": "object"})
    request = ChatRequest(
        model="up:gpt-4o",
        messages=messages,
        temperature=0.2,
        top_p=0.9,
        max_tokens=50,
        stop=["END"],
        seed=7,
        tools=[tool],
        tool_choice="weather",
        response_format={"type": "json_object"},
    )
    await make().complete(request)
    body = upstream.last
    assert body["model"] == "gpt-4o"
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                },
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        {"role": "user", "content": "thanks", "name": "ann"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {"type": "object"},
                "description": "Look up weather",
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert body["response_format"] == {"type": "json_object"}
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.9, 50)
    assert (body["stop"], body["seed"]) == (["END"], 7)
    assert "stream" not in body and "stream_options" not in body
    headers = upstream.headers[-1]
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["x-arbor-test"] == "yes"
    assert headers["content-type"] == "application/json"


async def test_unset_options_are_left_out(upstream: Upstream, make: Factory) -> None:
    upstream.handler = reply(completion())
    await make().complete(req(tool_choice="auto"))
    assert set(upstream.last) == {"model", "messages", "tool_choice"}
    assert upstream.last["tool_choice"] == "auto"


async def test_reasoning_models_get_max_completion_tokens(
    upstream: Upstream, make: Factory
) -> None:
    upstream.handler = reply(completion())
    await make("o4-mini").complete(req(max_tokens=10))
    assert upstream.last["max_completion_tokens"] == 10
    assert "max_tokens" not in upstream.last


async def test_stream_request_asks_for_usage(upstream: Upstream, make: Factory) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse(request, [chunk({"content": "x"}, "stop"), b"data: [DONE]\n\n"])

    upstream.handler = handler
    await collect(make(), req())
    assert upstream.last["stream"] is True
    assert upstream.last["stream_options"] == {"include_usage": True}


# ---- replies -----------------------------------------------------------------------------
async def test_parses_text_reply_and_usage(upstream: Upstream, make: Factory) -> None:
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 8},
    }
    upstream.handler = reply(completion("Hello!", usage=usage, finish="length"))
    r = await make().complete(req())
    assert (r.id, r.model, r.text, r.finish_reason) == (
        "chatcmpl-test",
        "gpt-test",
        "Hello!",
        "length",
    )
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.cached_input_tokens) == (12, 3, 8)
    assert not r.usage.estimated


async def test_parses_tool_calls(upstream: Upstream, make: Factory) -> None:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "add", "arguments": '{"a":1}'}},
        {"id": "call_b", "type": "function", "function": {"name": "mul", "arguments": '{"b":2}'}},
    ]
    upstream.handler = reply(completion(None, tool_calls=calls, finish="tool_calls"))
    r = await make().complete(req())
    assert r.finish_reason == "tool_calls"
    assert r.message.content is None
    assert r.message.tool_calls == [
        ToolCall(id="call_a", name="add", arguments='{"a":1}'),
        ToolCall(id="call_b", name="mul", arguments='{"b":2}'),
    ]


async def test_missing_usage_is_estimated_with_the_tokenizer(
    upstream: Upstream, make: Factory
) -> None:
    upstream.handler = reply(completion("Hello there, how are you?"))
    model = make()
    r = await model.complete(req("a question with several words"))
    assert r.usage.estimated
    assert r.usage.input_tokens == model.count_tokens(req("a question with several words").messages)
    assert r.usage.output_tokens == 7  # o200k_base: "Hello there, how are you?"


async def test_malformed_json_is_a_provider_error(upstream: Upstream, make: Factory) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>oops</html>", content_type="application/json")

    upstream.handler = handler
    with pytest.raises(ProviderError, match="malformed"):
        await make().complete(req())


# ---- streams -----------------------------------------------------------------------------
async def test_stream_yields_chunks_in_order_with_usage_last(
    upstream: Upstream, make: Factory
) -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 3}
    frames = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({"content": "!"}),
        chunk({}, "stop"),
        chunk(None, usage=usage),
        b"data: [DONE]\n\n",
    ]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse(request, frames)

    upstream.handler = handler
    chunks = await collect(make(), req())
    assert "".join(c.content or "" for c in chunks) == "Hello!"
    assert [c.finish_reason for c in chunks][-2] == "stop"
    assert [c.usage is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    last = chunks[-1].usage
    assert last is not None and (last.input_tokens, last.output_tokens, last.estimated) == (
        9,
        3,
        False,
    )


async def test_stream_tool_call_deltas(upstream: Upstream, make: Factory) -> None:
    frames = [
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "add", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse(request, frames)

    upstream.handler = handler
    chunks = await collect(make(), req())
    deltas = [d for c in chunks for d in c.tool_calls or ()]
    assert (deltas[0].id, deltas[0].name) == ("call_1", "add")
    assert "".join(d.arguments or "" for d in deltas) == '{"a":1}'
    final = chunks[-1].usage  # no usage from the server: estimated, output counts the call
    assert final is not None and final.estimated and final.output_tokens > 0


async def test_stream_without_usage_ends_with_an_estimate(
    upstream: Upstream, make: Factory
) -> None:
    frames = [chunk({"content": "one two three"}), chunk({}, "stop"), b"data: [DONE]\n\n"]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse(request, frames)

    upstream.handler = handler
    chunks = await collect(make(), req())
    usage = chunks[-1].usage
    assert usage is not None and usage.estimated
    assert usage.output_tokens == 3


async def test_usage_on_every_chunk_is_only_passed_on_at_the_end(
    upstream: Upstream, make: Factory
) -> None:
    """Some servers (vLLM's continuous usage stats) report usage on every chunk."""
    frames = [
        chunk({"content": "a"}, usage={"prompt_tokens": 5, "completion_tokens": 1}),
        chunk({"content": "b"}, "stop", usage={"prompt_tokens": 5, "completion_tokens": 2}),
        b"data: [DONE]\n\n",
    ]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse(request, frames)

    upstream.handler = handler
    chunks = await collect(make(), req())
    assert [c.usage is not None for c in chunks] == [False, False, True]
    usage = chunks[-1].usage
    assert usage is not None and (usage.output_tokens, usage.estimated) == (2, False)


async def test_stream_events_split_across_network_reads(upstream: Upstream, make: Factory) -> None:
    raw = b"".join(
        [
            b": keep-alive comment\r\n\r\n",
            chunk({"content": "é"}).replace(b"\n", b"\r\n"),
            chunk({"content": "ok"}, "stop"),
            b"data: [DONE]\n\n",
        ]
    )

    async def handler(request: web.Request) -> web.StreamResponse:
        pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
        return await sse(request, pieces, delay=0.001)

    upstream.handler = handler
    chunks = await collect(make(), req())
    assert "".join(c.content or "" for c in chunks) == "éok"


async def test_stream_cut_off_midway_is_a_connection_error(
    upstream: Upstream, make: Factory
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(chunk({"content": "partial"}))
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()  # no terminating chunk: the body is incomplete
        return resp

    upstream.handler = handler
    got: list[StreamChunk] = []
    with pytest.raises(ProviderConnectionError):
        async for c in make().stream(req()):
            got.append(c)
    assert [c.content for c in got] == ["partial"]  # what arrived was delivered


async def test_stream_error_event_raises(upstream: Upstream, make: Factory) -> None:
    frames = [b'data: {"error": {"message": "overloaded"}}\n\n']

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse(request, frames)

    upstream.handler = handler
    with pytest.raises(ProviderError, match="overloaded"):
        await collect(make(), req())


async def test_server_ignoring_stream_flag_still_streams(upstream: Upstream, make: Factory) -> None:
    upstream.handler = reply(
        completion("whole", usage={"prompt_tokens": 2, "completion_tokens": 1})
    )
    chunks = await collect(make(), req())
    assert [c.content for c in chunks] == ["whole", None]
    assert chunks[-1].usage is not None and chunks[-1].usage.output_tokens == 1


# ---- errors ------------------------------------------------------------------------------
def error_body(
    message: str, code: str | None = None, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 502, 503])
async def test_status_errors(upstream: Upstream, make: Factory, status: int) -> None:
    upstream.handler = reply(error_body(f"failure {status}"), status=status)
    with pytest.raises(ProviderHTTPError) as err:
        await make().complete(req())
    e = err.value
    assert type(e) is ProviderHTTPError
    assert e.status_code == status
    assert e.retriable is (status >= 500)
    assert f"failure {status}" in str(e) and f"failure {status}" in e.body
    assert (e.provider, e.model) == ("up", "gpt-4o")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past
        ({}, None),
    ],
)
async def test_429_is_rate_limited_with_retry_after(
    upstream: Upstream, make: Factory, headers: dict[str, str], expected: float | None
) -> None:
    upstream.handler = reply(error_body("slow down", "rate_limit_exceeded"), 429, headers)
    with pytest.raises(RateLimitedError) as err:
        await make().complete(req())
    assert err.value.status_code == 429
    assert err.value.retry_after == expected
    assert err.value.retriable


async def test_insufficient_quota_is_not_retriable(upstream: Upstream, make: Factory) -> None:
    upstream.handler = reply(error_body("quota", "insufficient_quota"), 429)
    with pytest.raises(RateLimitedError) as err:
        await make().complete(req())
    assert not err.value.retriable


@pytest.mark.parametrize(
    "body",
    [
        error_body("too long", "context_length_exceeded"),
        error_body("This model's maximum context length is 8192 tokens. However, you asked..."),
        {"error": "the request exceeds the available context size, try increasing it"},
    ],
)
async def test_context_length_errors(
    upstream: Upstream, make: Factory, body: dict[str, Any]
) -> None:
    upstream.handler = reply(body, 400)
    with pytest.raises(ContextTooLongError) as err:
        await make().complete(req())
    assert err.value.status_code == 400


async def test_streamed_call_translates_status_errors(upstream: Upstream, make: Factory) -> None:
    upstream.handler = reply(error_body("slow down"), 429, {"retry-after-ms": "20"})
    with pytest.raises(RateLimitedError) as err:
        await collect(make(), req())
    assert err.value.retry_after == 0.02


async def test_api_key_never_appears_in_errors(upstream: Upstream, make: Factory) -> None:
    """A server that echoes the key (in the message and the body) does not leak it."""
    long = "x" * 3000 + KEY  # the key right at the truncation point, too
    upstream.handler = reply(error_body(f"Incorrect API key provided: {KEY}. {long}"), 401)
    with pytest.raises(ProviderHTTPError) as err:
        await make().complete(req())
    e = err.value
    assert KEY not in str(e) and KEY not in e.body and KEY not in repr(e.args)
    assert KEY[:12] not in e.body  # not even a truncated prefix
    assert "***" in str(e)


async def test_connection_refused_is_a_connection_error(make: Factory) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = make(url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ProviderConnectionError) as err:
        await model.complete(req())
    assert err.value.retriable
    assert KEY not in str(err.value)


async def test_server_disconnect_is_a_connection_error(upstream: Upstream, make: Factory) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(1)
        raise AssertionError("unreachable")

    upstream.handler = handler
    with pytest.raises(ProviderConnectionError):
        await make().complete(req())


# ---- timeouts ----------------------------------------------------------------------------
def hang(upstream: Upstream) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    upstream.handler = handler


def client_tasks(upstream: Upstream) -> set[asyncio.Task[Any]]:
    """Live tasks other than this test's and the loopback server's."""

    def server_side(task: asyncio.Task[Any]) -> bool:
        code = getattr(task.get_coro(), "cr_code", None)
        return task in upstream.handler_tasks or "aiohttp/web_" in getattr(code, "co_filename", "")

    current = asyncio.current_task()
    return {
        t for t in asyncio.all_tasks() if not t.done() and t is not current and not server_side(t)
    }


async def test_read_timeout(upstream: Upstream, make: Factory) -> None:
    hang(upstream)
    with pytest.raises(LLMTimeoutError) as err:
        await make(read=0.2, total=10).complete(req())
    assert err.value.phase == "read"
    assert err.value.retriable


async def test_total_timeout_on_a_hung_server_leaks_nothing(
    upstream: Upstream, make: Factory
) -> None:
    hang(upstream)
    model = make(read=30, total=0.3)
    before = client_tasks(upstream)
    started = time.monotonic()
    with pytest.raises(LLMTimeoutError) as err:
        await model.complete(req())
    # Slack for a loaded machine; far below the 30 s read timeout that would end it otherwise.
    assert time.monotonic() - started < 0.3 + 5
    assert err.value.phase == "total"
    await asyncio.sleep(0)
    assert client_tasks(upstream) - before == set()


async def test_total_timeout_covers_a_stream(upstream: Upstream, make: Factory) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse(request, [chunk({"content": "x"})] * 100, delay=0.05)

    upstream.handler = handler
    started = time.monotonic()
    with pytest.raises(LLMTimeoutError) as err:
        await collect(make(total=0.3, stream_idle=5), req())
    assert err.value.phase == "total"
    # Slack for a loaded machine; below the 5 s the whole stream takes.
    assert time.monotonic() - started < 0.3 + 3


async def test_stream_idle_timeout(upstream: Upstream, make: Factory) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(chunk({"content": "first"}))
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    upstream.handler = handler
    model = make(stream_idle=0.2, total=10)
    before = client_tasks(upstream)
    got: list[str | None] = []
    started = time.monotonic()
    with pytest.raises(LLMTimeoutError) as err:
        async for c in model.stream(req()):
            got.append(c.content)
    assert err.value.phase == "stream_idle"
    assert got == ["first"]
    # Slack for a loaded machine; far below the 10 s total timeout.
    assert time.monotonic() - started < 0.2 + 5
    await asyncio.sleep(0)
    assert client_tasks(upstream) - before == set()


async def test_read_timeout_inside_a_stream_is_stream_idle(
    upstream: Upstream, make: Factory
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(chunk({"content": "first"}))
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    upstream.handler = handler
    with pytest.raises(LLMTimeoutError) as err:
        await collect(make(read=0.2, stream_idle=30, total=10), req())
    assert err.value.phase == "stream_idle"


async def test_early_exit_closes_the_response(upstream: Upstream, make: Factory) -> None:
    closed = asyncio.Event()
    sent = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for _ in range(1000):
                await resp.write(chunk({"content": "tick "}))
                sent += 1
                await asyncio.sleep(0.01)
        finally:
            closed.set()  # cancelled (client gone) or the write failed
        return resp

    upstream.handler = handler
    model = make()
    before = client_tasks(upstream)
    stream = model.stream(req())
    async for c in stream:
        if c.content:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(closed.wait(), 8)  # the stream itself would last 10 s
    assert sent < 1000
    assert client_tasks(upstream) - before == set()


# ---- other endpoints and sharing ----------------------------------------------------------
async def test_embed(upstream: Upstream, make: Factory) -> None:
    upstream.handler = reply(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": 1, "embedding": [0.5, 0.25]},
                {"object": "embedding", "index": 0, "embedding": [1, 0]},
            ],
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
    )
    vectors, usage = await make("text-embedding-3-small").embed(["first", "second"])
    assert vectors == [[1.0, 0.0], [0.5, 0.25]]
    assert usage.input_tokens == 4 and not usage.estimated
    assert upstream.last == {
        "model": "text-embedding-3-small",
        "input": ["first", "second"],
        "encoding_format": "float",
    }


async def test_list_models(upstream: Upstream, make: Factory) -> None:
    upstream.handler = reply(
        {"object": "list", "data": [{"id": "a", "object": "model"}, {"id": "b"}]}
    )
    assert await make().list_models() == ["a", "b"]


async def test_models_of_a_provider_share_one_client(upstream: Upstream) -> None:
    upstream.handler = reply(completion())
    clients = ProviderClients(TimeoutSettings())
    settings = ProviderSettings(base_url=upstream.url, api_key=KEY)
    a = OpenAICompatibleModel(
        "up", "m1", settings, TimeoutSettings(), client=clients.get("up", settings)
    )
    b = OpenAICompatibleModel(
        "up", "m2", settings, TimeoutSettings(), client=clients.get("up", settings)
    )
    assert clients.get("up", settings) is clients.get("up", settings)
    await asyncio.gather(a.complete(req()), b.complete(req()))
    await a.aclose()  # does not close the shared client
    await b.complete(req())
    await clients.aclose()
    assert sorted(r["model"] for r in upstream.requests) == ["m1", "m2", "m2"]


async def test_keyless_provider_sends_a_placeholder_not_the_environment(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    upstream.handler = reply(completion())
    model = OpenAICompatibleModel(
        "ollama", "llama3", ProviderSettings(base_url=upstream.url), TimeoutSettings()
    )
    await model.complete(req())
    await model.aclose()
    assert upstream.headers[-1]["authorization"] == "Bearer unused"


async def test_count_tokens(make: Factory) -> None:
    model = make()
    short = model.count_tokens([Message.user("hi")])
    longer = model.count_tokens([Message.user("hi " * 50)])
    assert 0 < short < longer


async def test_malformed_stream_event_is_a_provider_error(
    upstream: Upstream, make: Factory
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse(request, [chunk({"content": "ok"}), b"data: {not json\n\n"])

    upstream.handler = handler
    with pytest.raises(ProviderError, match="malformed stream event"):
        await collect(make(), req())
