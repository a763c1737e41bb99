"""Test doubles for models: not mocks, real :class:`~arbor.llm.model.Model` implementations
whose replies come from a script or a function.

``ScriptedModel`` records every request and fails loudly when the run and the script disagree:
a call after the script ran out raises :class:`ScriptError`, and ``assert_consumed()`` (also run
by ``aclose()`` and the ``async with`` exit) fails on steps that were never used.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from arbor.llm.types import (
    ChatRequest,
    ChatResponse,
    Message,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["FunctionModel", "ScriptError", "ScriptedModel", "Step", "estimate_tokens"]

#: One scripted reply: text, a full response, a tool-call list, or an exception to raise.
Step: TypeAlias = str | ChatResponse | list[ToolCall] | BaseException
Reply: TypeAlias = str | ChatResponse | list[ToolCall]
ReplyFn: TypeAlias = Callable[[ChatRequest], Reply | Awaitable[Reply]]

_ids = itertools.count(1)


class ScriptError(AssertionError):
    """The run and the script disagree."""


def estimate_tokens(text: str) -> int:
    """A deterministic rough count (≈4 characters a token) for doubles."""
    return max(1, (len(text) + 3) // 4) if text else 0


def _prompt_tokens(messages: Sequence[Message]) -> int:
    return sum(estimate_tokens(m.content or "") + 3 for m in messages) + 3


def _to_response(reply: Reply, request: ChatRequest, model: str) -> ChatResponse:
    if isinstance(reply, ChatResponse):
        return reply
    if isinstance(reply, list):
        msg = Message.assistant(None, tool_calls=reply)
        finish = "tool_calls"
        out = sum(estimate_tokens(c.arguments) for c in reply)
    else:
        msg = Message.assistant(reply)
        finish = "stop"
        out = estimate_tokens(reply)
    return ChatResponse(
        id=f"test-{next(_ids)}",
        model=model,
        message=msg,
        finish_reason=finish,
        usage=Usage(input_tokens=_prompt_tokens(request.messages), output_tokens=out),
    )


async def _chunks(response: ChatResponse, pieces: int = 3) -> AsyncIterator[StreamChunk]:
    """Stream a response as a few content chunks, tool-call deltas, then usage."""
    text = response.message.content or ""
    step = max(1, -(-len(text) // pieces)) if text else 1
    for i in range(0, len(text), step):
        await asyncio.sleep(0)
        yield StreamChunk(id=response.id, model=response.model, content=text[i : i + step])
    for n, call in enumerate(response.message.tool_calls or []):
        yield StreamChunk(
            id=response.id,
            model=response.model,
            tool_calls=[
                ToolCallDelta(index=n, id=call.id, name=call.name, arguments=call.arguments)
            ],
        )
    yield StreamChunk(
        id=response.id,
        model=response.model,
        finish_reason=response.finish_reason,
        usage=response.usage,
    )


@dataclass
class ScriptedModel:
    """Replies with ``steps`` in order, one per call (streaming or not)."""

    steps: list[Step]
    name: str = "scripted"
    provider: str = "test"
    calls: list[ChatRequest] = field(default_factory=list)
    _next: int = 0

    @property
    def remaining(self) -> int:
        return len(self.steps) - self._next

    def _take(self, request: ChatRequest) -> ChatResponse:
        self.calls.append(request)
        if self._next >= len(self.steps):
            last = request.messages[-1].content if request.messages else None
            raise ScriptError(
                f"{self.provider}:{self.name} got call #{len(self.calls)} but the script has "
                f"{len(self.steps)} step(s); last message: {last!r}"
            )
        step = self.steps[self._next]
        self._next += 1
        if isinstance(step, BaseException):
            raise step
        return _to_response(step, request, self.name)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        await asyncio.sleep(0)
        return self._take(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        response = self._take(request)
        async for chunk in _chunks(response):
            yield chunk

    def count_tokens(self, messages: list[Message]) -> int:
        return _prompt_tokens(messages)

    def assert_consumed(self) -> None:
        if self.remaining:
            raise ScriptError(
                f"{self.provider}:{self.name}: {self.remaining} scripted step(s) never used "
                f"(after {len(self.calls)} call(s))"
            )

    async def aclose(self) -> None:
        self.assert_consumed()

    async def __aenter__(self) -> ScriptedModel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.assert_consumed()


@dataclass
class FunctionModel:
    """Replies with whatever ``function(request)`` returns (sync or async); may raise."""

    function: ReplyFn
    name: str = "function"
    provider: str = "test"
    calls: list[ChatRequest] = field(default_factory=list)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls.append(request)
        reply = self.function(request)
        if inspect.isawaitable(reply):
            reply = await reply
        return _to_response(reply, request, self.name)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        response = await self.complete(request)
        async for chunk in _chunks(response):
            yield chunk

    def count_tokens(self, messages: list[Message]) -> int:
        return _prompt_tokens(messages)

    async def aclose(self) -> None:
        return None
