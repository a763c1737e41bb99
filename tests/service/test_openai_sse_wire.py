"""OpenAI response bytes: completion bodies, SSE chunk frames and the stream encoder."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from arbor.core.errors import ProviderConnectionError
from arbor.llm.types import ChatResponse, Message, StreamChunk, ToolCall, ToolCallDelta, Usage
from arbor.service.openai_wire import (
    DONE,
    KEEPALIVE,
    ChunkEncoder,
    completion_body,
    embeddings_body,
    encode_stream,
    with_keepalive,
)


def _events(frames: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for frame in frames:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        payload = frame[6:-2]
        out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


async def _source(
    *chunks: StreamChunk, fail: Exception | None = None
) -> AsyncIterator[StreamChunk]:
    for chunk in chunks:
        yield chunk
    if fail is not None:
        raise fail


async def _encode(source: AsyncIterator[StreamChunk], *, usage: bool, **kw: Any) -> list[Any]:
    encoder = ChunkEncoder("chatcmpl-1", "mock:m", 1700000000, include_usage=usage)
    return _events([f async for f in encode_stream(source, encoder, include_usage=usage, **kw)])


def test_completion_body_has_the_openai_fields() -> None:
    reply = ChatResponse(
        id="x",
        model="m",
        message=Message.assistant(None, [ToolCall(id="c1", name="f", arguments='{"a":1}')]),
        usage=Usage(input_tokens=3, output_tokens=2, cached_input_tokens=1),
    )
    body = json.loads(completion_body(reply, rid="chatcmpl-9", model="mock:m", created=5))
    assert body["object"] == "chat.completion" and body["id"] == "chatcmpl-9"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"  # inferred when the reply calls tools
    assert choice["message"]["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    ]
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 1},
    }


def test_chunk_frames() -> None:
    enc = ChunkEncoder("id-1", 'model "quoted"', 7, include_usage=True)
    first, second = _events([enc.delta("Hel"), enc.delta("lo", finish_reason="stop")])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert second["choices"][0]["delta"] == {"content": "lo"}
    assert second["choices"][0]["finish_reason"] == "stop"
    assert first["model"] == 'model "quoted"' and first["usage"] is None
    calls = _events([enc.delta(tool_calls=[ToolCallDelta(index=0, id="c", name="f")])])[0]
    assert calls["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "c", "type": "function", "function": {"name": "f"}}
    ]
    usage = _events([enc.usage(Usage(input_tokens=2, output_tokens=1))])[0]
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 3
    plain = ChunkEncoder("id-2", "m", 7, include_usage=False)
    assert "usage" not in _events([plain.delta("x")])[0]


async def test_encode_stream_finishes_and_reports_usage() -> None:
    usage = Usage(input_tokens=4, output_tokens=2)
    source = _source(StreamChunk(content="a"), StreamChunk(content="b"), StreamChunk(usage=usage))
    events = await _encode(source, usage=True)
    assert [e["choices"][0]["delta"].get("content") for e in events[:2]] == ["a", "b"]
    assert events[2]["choices"][0]["finish_reason"] == "stop"  # added: the source sent none
    assert events[3]["usage"]["prompt_tokens"] == 4
    assert events[-1] == "[DONE]"


async def test_encode_stream_reports_a_mid_stream_failure_in_band() -> None:
    failure = ProviderConnectionError("upstream sk-secret-123 went away")
    events = await _encode(
        _source(StreamChunk(content="a"), fail=failure),
        usage=False,
        redact=lambda text: text.replace("sk-secret-123", "***"),
    )
    assert events[0]["choices"][0]["delta"]["content"] == "a"
    assert events[1]["error"] == {
        "message": "upstream *** went away",
        "type": "api_error",
        "code": "connection",
        "param": None,
    }
    assert "[DONE]" not in events  # the stream did not complete


async def test_encode_stream_with_a_first_chunk_taken_already() -> None:
    events = await _encode(
        _source(StreamChunk(finish_reason="stop")), usage=False, first=StreamChunk(content="x")
    )
    assert events[0]["choices"][0]["delta"]["content"] == "x"
    assert events[1]["choices"][0]["finish_reason"] == "stop"
    assert events[2:] == ["[DONE]"] and DONE == b"data: [DONE]\n\n"


def test_embeddings_body() -> None:
    body = json.loads(
        embeddings_body([[0.5, -1.0]], model="p:m", usage=Usage(input_tokens=3), encoding="float")
    )
    assert body["data"] == [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]}]
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


async def _slow_frames(delays: list[float], closed: list[bool]) -> AsyncGenerator[bytes, None]:
    try:
        for i, delay in enumerate(delays):
            await asyncio.sleep(delay)
            yield f"frame {i}".encode()
    finally:
        closed.append(True)


async def test_keepalive_fills_silence_without_losing_frames() -> None:
    closed: list[bool] = []
    out = [f async for f in with_keepalive(_slow_frames([0.0, 0.12, 0.0], closed), 0.03)]
    frames = [f for f in out if f != KEEPALIVE]
    assert frames == [b"frame 0", b"frame 1", b"frame 2"]
    assert out.index(b"frame 1") - out.index(b"frame 0") >= 3  # keep-alives in between
    assert closed == [True]


async def test_keepalive_closed_early_stops_the_source() -> None:
    closed: list[bool] = []
    stream = with_keepalive(_slow_frames([0.0, 10.0], closed), 0.01)
    assert await anext(stream) == b"frame 0"
    assert await anext(stream) == KEEPALIVE
    await stream.aclose()  # the client went away while the source was waiting
    assert closed == [True]
