"""An :class:`~arbor.llm.client.LLMClient` view that attributes every call to one API key.

Workflow nodes and agents build their own requests (the built-in ones only set ``run_id`` in
the :class:`~arbor.llm.types.CallContext`), so a run started by an API key would otherwise
escape that key's rpm/tpm limits and budget. The view shares the whole pipeline of the
client it wraps (cache, limiter, breakers, budgets, usage sink, models) and only stamps
``key_id`` onto requests that carry none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest, ChatResponse, Message, StreamChunk

__all__ = ["KeyedClient", "for_key"]


class KeyedClient(LLMClient):
    """``base`` with ``key_id`` stamped on each request; closing it leaves ``base`` open."""

    def __init__(self, base: LLMClient, key_id: str) -> None:
        # Deliberately no super().__init__(): the view must share the base client's
        # limiter, breakers, budgets and caches (the same objects), not build new ones.
        self.__dict__.update(base.__dict__)
        self.base = base
        self.key_id = key_id

    async def complete(
        self,
        request: ChatRequest | None = None,
        /,
        *,
        model: str | None = None,
        messages: str | Sequence[Message | Mapping[str, Any]] | None = None,
        **params: Any,
    ) -> ChatResponse:
        req = request or self._request(model, messages, params)
        return await super().complete(self._stamp(req))

    async def stream(
        self,
        request: ChatRequest | None = None,
        /,
        *,
        model: str | None = None,
        messages: str | Sequence[Message | Mapping[str, Any]] | None = None,
        **params: Any,
    ) -> AsyncIterator[StreamChunk]:
        req = request or self._request(model, messages, params)
        async for chunk in super().stream(self._stamp(req)):
            yield chunk

    async def aclose(self) -> None:
        """Nothing to release: the base client owns every resource."""

    def _stamp(self, req: ChatRequest) -> ChatRequest:
        if req.context.key_id is not None:
            return req
        context = req.context.model_copy(update={"key_id": self.key_id})
        return req.model_copy(update={"context": context})


def for_key(client: LLMClient, key_id: str | None) -> LLMClient:
    """``client`` itself without a key, else a :class:`KeyedClient` view of it."""
    if key_id is None:
        return client
    base = client.base if isinstance(client, KeyedClient) else client
    return KeyedClient(base, key_id)
