"""The mock upstream over real loopback HTTP: reply shapes, streams, limits, faults, stats."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from array import array
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx
import openai
import pytest

from arbor.testing.mock_upstream import MockConfig, MockUpstream, main, spawn_mock_upstream

TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]


def chat(text: str = "hello there world", **extra: Any) -> dict[str, Any]:
    return {"model": "mock-1", "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture
async def mock() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, payload: Any
) -> tuple[int, dict[str, str], Any]:
    async with http.post(url, json=payload) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


def sse_events(raw: bytes) -> list[str]:
    events = raw.decode().split("\n\n")
    assert events[-1] == "", "a stream ends with a blank line"
    assert all(e.startswith("data: ") for e in events[:-1])
    return [e.removeprefix("data: ") for e in events[:-1]]


async def stream_events(http: aiohttp.ClientSession, url: str, payload: Any) -> list[str]:
    async with http.post(url, json=payload) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        return sse_events(await r.read())


async def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


# -- replies ------------------------------------------------------------------------------


async def test_chat_reply_shape_usage_and_determinism(
    mock: MockUpstream, http: aiohttp.ClientSession
) -> None:
    url = mock.url + "/chat/completions"
    status, headers, body = await post(http, url, chat())
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert body["object"] == "chat.completion" and body["model"] == "mock-1"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    words = choice["message"]["content"].split()
    assert words[:2] == ["Mock", "reply"] and words[3:] == ["hello", "there", "world"]
    # 3 words + 3 per message; the reply's words
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 6, "total_tokens": 12}

    _, _, again = await post(http, url, chat())
    _, _, other = await post(http, url, chat("something else"))
    assert again["choices"][0]["message"]["content"] == choice["message"]["content"]
    assert again["id"] != body["id"]
    assert other["choices"][0]["message"]["content"].split()[2] != words[2]  # the digest


async def test_max_tokens_truncates_with_finish_length(
    mock: MockUpstream, http: aiohttp.ClientSession
) -> None:
    _, _, body = await post(http, mock.url + "/chat/completions", chat(max_tokens=4))
    assert len(body["choices"][0]["message"]["content"].split()) == 4
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4


async def test_stream_format_with_usage_chunk_and_done(
    mock: MockUpstream, http: aiohttp.ClientSession
) -> None:
    url = mock.url + "/chat/completions"
    _, _, plain = await post(http, url, chat())
    payload = chat(stream=True, stream_options={"include_usage": True})
    events = await stream_events(http, url, payload)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert len(content) == MockConfig().chunks  # the --chunks knob, default 8
    assert "".join(content) == plain["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]

    without_usage = await stream_events(http, url, chat(stream=True))
    assert all("usage" not in json.loads(e) for e in without_usage[:-1])
    assert without_usage[-1] == "[DONE]"


async def test_chunks_and_delays_knobs(http: aiohttp.ClientSession) -> None:
    config = MockConfig(chunks=3, chunk_delay_ms=30, latency_ms=50)
    async with MockUpstream(config) as mock:
        start = time.perf_counter()
        events = await stream_events(http, mock.url + "/chat/completions", chat(stream=True))
        elapsed = time.perf_counter() - start
    assert len(events) == 1 + 3 + 1 + 1  # role, content x3, finish, [DONE]
    assert elapsed >= 0.05 + 4 * 0.03  # latency, then a pause between every later event


async def test_tool_call_reply_plain_and_streamed(
    mock: MockUpstream, http: aiohttp.ClientSession
) -> None:
    url = mock.url + "/chat/completions"
    text = '/tool add {"a": 1, "b": 2}'
    _, _, body = await post(http, url, chat(text, tools=TOOLS))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "add", "arguments": '{"a": 1, "b": 2}'}

    events = await stream_events(http, url, chat(text, tools=TOOLS, stream=True))
    chunks = [json.loads(e) for e in events[:-1]]
    first = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["id"] == call["id"] and first["function"]["name"] == "add"
    pieces = [c["choices"][0]["delta"]["tool_calls"][0]["function"] for c in chunks[1:-1]]
    assert "".join(p["arguments"] for p in pieces) == '{"a": 1, "b": 2}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    _, _, no_tools = await post(http, url, chat(text))  # no tools offered: a plain reply
    assert no_tools["choices"][0]["finish_reason"] == "stop"


async def test_reply_after_a_tool_result_echoes_it(
    mock: MockUpstream, http: aiohttp.ClientSession
) -> None:
    messages = [
        {"role": "user", "content": "/tool add {}"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
         "function": {"name": "add", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "42"},
    ]  # fmt: skip
    payload = {"model": "mock-1", "messages": messages, "tools": TOOLS}
    _, _, body = await post(http, mock.url + "/chat/completions", payload)
    assert body["choices"][0]["message"]["content"].endswith(": 42")


async def test_context_too_long_and_status_commands(
    mock: MockUpstream, http: aiohttp.ClientSession
) -> None:
    url = mock.url + "/chat/completions"
    status, _, body = await post(http, url, chat("please /context-too-long"))
    assert status == 400
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("This model's maximum context length is")
    for code in (400, 401, 404, 503):
        status, _, body = await post(http, url, chat(f"/status {code}"))
        assert status == code and body["error"]["message"]
    status, headers, body = await post(http, url, chat("/status 429"))
    assert status == 429 and headers["Retry-After"] == "1"
    assert body["error"]["type"] == "rate_limit_exceeded"


async def test_bad_requests_and_routes(mock: MockUpstream, http: aiohttp.ClientSession) -> None:
    async with http.post(mock.url + "/chat/completions", data=b"{not json") as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"
    status, _, _ = await post(http, mock.url + "/chat/completions", {"model": "mock-1"})
    assert status == 400  # no messages
    async with http.get(mock.url + "/chat/completions") as r:
        assert r.status == 405
    async with http.get(mock.url + "/nowhere") as r:
        assert r.status == 404
    async with http.get(mock.url + "/models") as r:
        ids = [m["id"] for m in (await r.json())["data"]]
    assert {"mock-1", "mock-large"} <= set(ids)
    assert mock.stats.by_status == {"400": 2}  # models and routing errors are not counted


async def test_embeddings_floats_and_base64(
    mock: MockUpstream, http: aiohttp.ClientSession
) -> None:
    url = mock.url + "/embeddings"
    _, _, body = await post(http, url, {"model": "e", "input": ["a b c", "other", "a b c"]})
    vectors = [d["embedding"] for d in body["data"]]
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert len(vectors[0]) == 16 and vectors[0] == vectors[2] != vectors[1]
    assert sum(v * v for v in vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}  # words per input

    payload = {"model": "e", "input": "a b c", "encoding_format": "base64", "dimensions": 8}
    _, _, b64 = await post(http, url, payload)
    decoded = array("f", base64.b64decode(b64["data"][0]["embedding"]))
    assert len(decoded) == 8
    status, _, _ = await post(http, url, {"model": "e", "input": []})
    assert status == 400


async def test_openai_sdk_speaks_to_it(mock: MockUpstream) -> None:
    async with openai.AsyncOpenAI(base_url=mock.url, api_key="sk-test", max_retries=0) as client:
        reply = await client.chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content and reply.usage is not None
        stream = await client.chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        text, usage = "", None
        async for chunk in stream:
            text += "".join(c.delta.content or "" for c in chunk.choices)
            usage = chunk.usage or usage
        assert text == reply.choices[0].message.content and usage == reply.usage
        embedded = await client.embeddings.create(model="e", input="hi")  # base64 by default
        assert len(embedded.data[0].embedding) == 16
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="mock-1", messages=[{"role": "user", "content": "/context-too-long"}]
            )
        assert caught.value.code == "context_length_exceeded"


# -- limits ---------------------------------------------------------------------------------


async def test_rpm_limit_per_second_window(http: aiohttp.ClientSession) -> None:
    async with MockUpstream(MockConfig(rpm=120)) as mock:  # 2 requests per 1 s window
        url = mock.url + "/chat/completions"
        first = await post(http, url, chat())
        second = await post(http, url, chat())
        status, headers, body = await post(http, url, chat())
        assert [first[0], second[0]] == [200, 200]
        assert first[1]["x-ratelimit-remaining-requests"] == "1"
        assert second[1]["x-ratelimit-remaining-requests"] == "0"
        assert status == 429 and headers["Retry-After"] == "1"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-reset-requests"].endswith("ms")
        assert body["error"]["type"] == body["error"]["code"] == "rate_limit_exceeded"
        await asyncio.sleep(1.05)
        assert (await post(http, url, chat()))[0] == 200
        assert mock.stats.by_status == {"200": 3, "429": 1}


async def test_tpm_limit(http: aiohttp.ClientSession) -> None:
    async with MockUpstream(MockConfig(tpm=900)) as mock:  # 15 tokens per window
        url = mock.url + "/chat/completions"
        ok = await post(http, url, chat())  # 6 + 6 tokens
        assert ok[0] == 200 and ok[1]["x-ratelimit-remaining-tokens"] == "3"
        status, headers, body = await post(http, url, chat())
        assert status == 429 and headers["Retry-After"] == "1"
        assert "tokens" in body["error"]["message"]


# -- faults ---------------------------------------------------------------------------------


async def test_fault_500_and_429(http: aiohttp.ClientSession) -> None:
    for mode, expected in (("500", 500), ("429", 429)):
        async with MockUpstream(MockConfig(fail_rate=1.0, fail_mode=mode)) as mock:
            status, headers, body = await post(http, mock.url + "/chat/completions", chat())
            assert status == expected and "error" in body
            assert (headers.get("Retry-After") == "1") == (expected == 429)


async def test_fault_disconnect_closes_without_response() -> None:
    async with MockUpstream(MockConfig(fail_rate=1.0, fail_mode="disconnect")) as mock:
        async with httpx.AsyncClient() as client:
            for payload in (chat(), chat(stream=True)):
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.post(mock.url + "/chat/completions", json=payload)
        assert mock.stats.by_status == {"disconnect": 2}


async def test_fault_midstream_cuts_a_stream_after_some_chunks() -> None:
    async with MockUpstream(MockConfig(fail_rate=1.0, fail_mode="midstream")) as mock:
        url = mock.url + "/chat/completions"
        received: list[str] = []
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                async with client.stream("POST", url, json=chat(stream=True)) as r:
                    assert r.status_code == 200
                    async for line in r.aiter_lines():
                        if line:
                            received.append(line)
            with pytest.raises(httpx.RemoteProtocolError):  # non-stream: like disconnect
                await client.post(url, json=chat())
        assert 1 < len(received) < 1 + 8 + 2 and "data: [DONE]" not in received
        assert mock.stats.by_status == {"midstream": 2}


async def test_fault_hang_releases_when_client_leaves_and_on_stop() -> None:
    mock = MockUpstream(MockConfig(fail_rate=1.0, fail_mode="hang"))
    await mock.start()
    timeout = aiohttp.ClientTimeout(total=0.2)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        with pytest.raises(asyncio.TimeoutError):
            await post(http, mock.url + "/chat/completions", chat())
    # the handler is cancelled once the connection is gone
    assert await eventually(lambda: mock.in_flight == 0)
    assert mock.stats.by_status == {"hang": 1}

    async with aiohttp.ClientSession() as http:
        pending = asyncio.ensure_future(post(http, mock.url + "/chat/completions", chat()))
        assert await eventually(lambda: mock.in_flight == 1)
        start = time.perf_counter()
        await mock.stop()  # does not wait for the hanging request
        # Waiting for it would last the server's whole 1 s shutdown timeout: anything shorter
        # shows the cut, with as much slack as a loaded machine can be given.
        assert time.perf_counter() - start < 0.9
        with pytest.raises(aiohttp.ClientError):
            await pending


async def test_held_replies_wait_for_release_and_stop_lets_them_go(
    mock: MockUpstream, http: aiohttp.ClientSession
) -> None:
    url = mock.url + "/chat/completions"
    mock.hold()
    held = [asyncio.ensure_future(post(http, url, chat())) for _ in range(2)]
    embedding = asyncio.ensure_future(
        post(http, mock.url + "/embeddings", {"model": "mock-embedding", "input": "x"})
    )
    assert await eventually(lambda: mock.in_flight == 3)
    await asyncio.sleep(0.1)  # (a held reply would come back meanwhile)
    assert not any(f.done() for f in [*held, embedding])
    mock.release()
    assert [(await f)[0] for f in [*held, embedding]] == [200, 200, 200]
    assert (await post(http, url, chat()))[0] == 200  # released: no longer holding
    mock.hold()
    last = asyncio.ensure_future(post(http, url, chat()))
    assert await eventually(lambda: mock.in_flight == 1)
    await mock.stop()  # a stop answers what was held
    assert (await last)[0] == 200


async def test_faults_follow_the_seed_and_reset_reseeds(http: aiohttp.ClientSession) -> None:
    config = MockConfig(fail_rate=0.5, fail_mode="500", seed=7)
    rng = random.Random(7)
    expected = [500 if rng.random() < 0.5 else 200 for _ in range(20)]
    async with MockUpstream(config) as mock:
        url = mock.url + "/chat/completions"
        seen = [(await post(http, url, chat()))[0] for _ in range(20)]
        async with http.post(mock.url.removesuffix("/v1") + "/_reset") as r:
            assert (await r.json()) == {"requests": 0, "by_status": {}}
        again = [(await post(http, url, chat()))[0] for _ in range(20)]
    assert seen == expected == again


async def test_stats_count_every_counted_request(
    mock: MockUpstream, http: aiohttp.ClientSession
) -> None:
    await post(http, mock.url + "/chat/completions", chat())
    await stream_events(http, mock.url + "/chat/completions", chat(stream=True))
    await post(http, mock.url + "/embeddings", {"model": "e", "input": "x"})
    await post(http, mock.url + "/chat/completions", chat("/status 401"))
    async with http.get(mock.origin + "/_stats") as r:
        stats = await r.json()
    assert stats == {"requests": 4, "by_status": {"200": 3, "401": 1}}
    assert mock.stats.to_dict() == stats
    mock.reset()
    assert mock.stats.requests == 0 and mock.stats.by_status == {}


# -- config, process and speed ------------------------------------------------------------


def test_config_validation_and_argv_round_trip() -> None:
    with pytest.raises(ValueError, match="fail_mode"):
        MockConfig(fail_mode="explode")
    with pytest.raises(ValueError, match="fail_rate"):
        MockConfig(fail_rate=2)
    with pytest.raises(SystemExit):
        main(["--fail-mode", "explode"])
    config = MockConfig(rpm=60, tpm=6000, fail_rate=0.25, fail_mode="hang", seed=3, chunks=2)
    assert "--rpm" in config.to_argv() and "hang" in config.to_argv()


async def _load(http: aiohttp.ClientSession, url: str, seconds: float) -> list[int]:
    """Statuses of 16 concurrent clients posting for ``seconds``."""
    statuses: list[int] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            async with http.post(url, json=chat()) as r:
                await r.read()
                statuses.append(r.status)

    await asyncio.gather(*(client() for _ in range(16)))
    return statuses


async def test_spawned_process_serves_and_is_fast_enough() -> None:
    with spawn_mock_upstream(rpm=60_000_000, chunks=4) as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        async with aiohttp.ClientSession() as http:
            statuses = await _load(http, url + "/chat/completions", seconds=1.0)
            async with http.get(url.removesuffix("/v1") + "/_stats") as r:
                stats = await r.json()
    assert set(statuses) == {200}
    # Thousands/s on one core in practice (tests/testing/mock_upstream_throughput.py); this
    # floor only catches a pathological slowdown, even on a busy CI machine.
    assert len(statuses) > 300
    assert stats == {"requests": len(statuses), "by_status": {"200": len(statuses)}}
    async with httpx.AsyncClient() as client:  # terminated on exit
        with pytest.raises(httpx.ConnectError):
            await client.get(url + "/models")
