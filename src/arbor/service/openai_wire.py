"""OpenAI response bodies and SSE chunks, written as bytes.

The gateway's budget is ~1.5 ms added per call and ~2 ms added time to first token, so the
hot path does no pydantic dumps: a stream's constant prefix (id, created, model) is encoded
once, and each chunk costs one ``orjson.dumps`` of its delta plus a few byte joins.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
from array import array
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import Any, Final

import orjson
import structlog

from arbor.core.errors import ArborError
from arbor.llm.types import ChatResponse, StreamChunk, ToolCallDelta, Usage

__all__ = [
    "DONE",
    "KEEPALIVE",
    "ChunkEncoder",
    "completion_body",
    "embeddings_body",
    "encode_stream",
    "model_entry",
    "models_body",
    "usage_dict",
    "with_keepalive",
]

dumps = orjson.dumps
log = structlog.get_logger("arbor.service.openai")

#: OpenAI's end-of-stream marker.
DONE: Final = b"data: [DONE]\n\n"
#: An SSE comment: clients (the openai SDK included) skip it; proxies see bytes flowing.
KEEPALIVE: Final = b": keep-alive\n\n"


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    }


def completion_body(response: ChatResponse, *, rid: str, model: str, created: int) -> bytes:
    """A ``chat.completion`` object for a finished reply."""
    msg = response.message
    message: dict[str, Any] = {"role": "assistant", "content": msg.content, "refusal": None}
    if msg.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in msg.tool_calls
        ]
    finish = response.finish_reason or ("tool_calls" if msg.tool_calls else "stop")
    return dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": usage_dict(response.usage),
        }
    )


def _tool_deltas(deltas: Iterable[ToolCallDelta]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for d in deltas:
        item: dict[str, Any] = {"index": d.index}
        if d.id is not None:
            item["id"] = d.id
            item["type"] = "function"
        fn: dict[str, str] = {}
        if d.name is not None:
            fn["name"] = d.name
        if d.arguments is not None:
            fn["arguments"] = d.arguments
        if fn:
            item["function"] = fn
        out.append(item)
    return out


class ChunkEncoder:
    """``chat.completion.chunk`` SSE frames of one stream. With ``include_usage`` every
    chunk carries ``"usage": null`` and :meth:`usage` gives the final, choice-less one, as
    OpenAI does."""

    __slots__ = ("_head", "_role_sent", "_tail", "created", "model", "rid")

    def __init__(self, rid: str, model: str, created: int, *, include_usage: bool) -> None:
        self.rid, self.model, self.created = rid, model, created
        self._head = (
            b'data: {"id":'
            + dumps(rid)
            + b',"object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + dumps(model)
            + b',"system_fingerprint":null,"choices":[{"index":0,"delta":'
        )
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        self._role_sent = False

    def delta(
        self,
        content: str | None = None,
        tool_calls: list[ToolCallDelta] | None = None,
        finish_reason: str | None = None,
    ) -> bytes:
        delta: dict[str, Any] = {}
        if not self._role_sent:  # the first chunk names the role, like OpenAI's
            delta["role"] = "assistant"
            self._role_sent = True
        if content is not None:
            delta["content"] = content
        if tool_calls:
            delta["tool_calls"] = _tool_deltas(tool_calls)
        finish = b"null" if finish_reason is None else dumps(finish_reason)
        return (
            self._head
            + dumps(delta)
            + b',"logprobs":null,"finish_reason":'
            + finish
            + b"}]"
            + self._tail
        )

    def usage(self, usage: Usage) -> bytes:
        body = {
            "id": self.rid,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": usage_dict(usage),
        }
        return b"data: " + dumps(body) + b"\n\n"

    @staticmethod
    def error(message: str, *, type_: str = "api_error", code: str | None = None) -> bytes:
        """An error after the stream started (the status is already 200): the openai SDK
        raises on an event carrying ``error``."""
        error = {"message": message, "type": type_, "code": code, "param": None}
        return b"data: " + dumps({"error": error}) + b"\n\n"


async def encode_stream(
    chunks: AsyncIterator[StreamChunk],
    encoder: ChunkEncoder,
    *,
    include_usage: bool,
    first: StreamChunk | None = None,
    redact: Callable[[str], str] | None = None,
) -> AsyncGenerator[bytes, None]:
    """Arbor chunks → SSE frames, ending with ``[DONE]`` (or an error event when the
    source fails mid-stream). ``first`` is a chunk already taken from ``chunks`` (the route
    awaits it before answering so that early errors still get their HTTP status)."""
    usage: Usage | None = None
    finished = False
    try:
        chunk = first if first is not None else await anext(chunks, None)
        while chunk is not None:
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.content or chunk.tool_calls or chunk.finish_reason is not None:
                finished = finished or chunk.finish_reason is not None
                yield encoder.delta(chunk.content, chunk.tool_calls, chunk.finish_reason)
            chunk = await anext(chunks, None)
    except ArborError as exc:
        message = exc.message if redact is None else redact(exc.message)
        yield ChunkEncoder.error(message, code=exc.kind)
        return
    except Exception:  # a bug: the status is already 200, so tell the client in-band
        log.exception("openai.stream_failed", id=encoder.rid)
        yield ChunkEncoder.error("internal error", code="internal")
        return
    if not finished:
        yield encoder.delta(finish_reason="stop")
    if include_usage:
        yield encoder.usage(usage or Usage())
    yield DONE


async def with_keepalive(
    frames: AsyncGenerator[bytes, None], interval: float
) -> AsyncGenerator[bytes, None]:
    """``frames``, with :data:`KEEPALIVE` whenever ``interval`` seconds pass without one: a
    workflow node may think for minutes, and proxies drop connections that stay silent. The
    next frame is awaited in a task so a keep-alive never interrupts it."""
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(frames))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield KEEPALIVE
                continue
            try:
                frame = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield frame
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await frames.aclose()


def model_entry(model_id: str, owned_by: str, created: int = 0) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


def models_body(entries: list[dict[str, Any]]) -> bytes:
    return dumps({"object": "list", "data": entries})


def embeddings_body(
    vectors: list[list[float]], *, model: str, usage: Usage, encoding: str
) -> bytes:
    data: list[dict[str, Any]] = []
    for index, vector in enumerate(vectors):
        embedding: Any = vector
        if encoding == "base64":  # little-endian float32, what the openai SDK decodes
            packed = array("f", vector)
            if sys.byteorder == "big":  # pragma: no cover - no big-endian CI
                packed.byteswap()
            embedding = base64.b64encode(packed.tobytes()).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = usage.input_tokens
    return dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
