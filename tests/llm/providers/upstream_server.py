"""Helpers for a scriptable OpenAI-compatible HTTP server on loopback (the ``upstream``
fixture in conftest.py starts one inside each test)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Upstream:
    """Records every request; ``handler`` decides the answer (set it per test)."""

    url: str = ""
    handler: Handler | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: Request headers, names lower-cased.
    headers: list[dict[str, str]] = field(default_factory=list)
    #: Tasks running this server's handlers, so leak checks can tell them from the client's.
    handler_tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]


def completion(
    content: str | None = "Hello!",
    *,
    usage: dict[str, Any] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    finish: str = "stop",
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-test",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    data: dict[str, Any] = {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "model": "gpt-test",
    }
    data["choices"] = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    )
    data.update(extra)
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def sse(request: web.Request, frames: list[bytes], delay: float = 0.0) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for frame in frames:
        await resp.write(frame)
        if delay:
            await asyncio.sleep(delay)
    await resp.write_eof()
    return resp
