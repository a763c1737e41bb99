"""A view of an :class:`~arbor.llm.client.LLMClient` that stamps call context onto requests.

Agents and workflow nodes build their own requests, so a caller that must attribute every
call of a run or a batch item (to an API key's limits and budget, to a batch) hands them a
view instead of the client. The view shares the whole pipeline of the client it wraps
(cache, limiter, breakers, budgets, usage sink, models: the same objects) and only fills the
context fields a request leaves empty; subclasses may observe each call's usage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest, ChatResponse, Message, StreamChunk, Usage

__all__ = ["ClientView", "KeyedClient", "for_key"]


class ClientView(LLMClient):
    """``base`` with ``context`` fields (e.g. ``key_id``, ``batch_id``) stamped on each
    request that carries none; closing the view leaves ``base`` open."""

    def __init__(self, base: LLMClient, **context: str) -> None:
        # Deliberately no super().__init__(): the view must share the base client's
        # limiter, breakers, budgets and caches (the same objects), not build new ones.
        self.__dict__.update(base.__dict__)
        self.base = base
        # A view of a view keeps the inner view's stamps (e.g. a batch item's view of a
        # key's view stamps both batch_id and key_id).
        self._stamped = {**getattr(base, "_stamped", {}), **context}

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
        response = await super().complete(self._stamp(req))
        self._observe(response.usage, response.cost_usd)
        return response

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
            if chunk.usage is not None:
                self._observe(chunk.usage, chunk.cost_usd or 0.0)
            yield chunk

    async def aclose(self) -> None:
        """Nothing to release: the base client owns every resource."""

    def _observe(self, usage: Usage, cost_usd: float) -> None:
        """Called with each finished call's usage and cost (no-op here)."""

    def _stamp(self, req: ChatRequest) -> ChatRequest:
        missing = {k: v for k, v in self._stamped.items() if getattr(req.context, k) is None}
        if not missing:
            return req
        context = req.context.model_copy(update=missing)
        return req.model_copy(update={"context": context})


class KeyedClient(ClientView):
    """``base`` with ``key_id`` stamped on each request, so a run or batch started by an API
    key stays under that key's rpm/tpm limits and budget; closing it leaves ``base`` open."""

    def __init__(self, base: LLMClient, key_id: str) -> None:
        super().__init__(base, key_id=key_id)
        self.key_id = key_id


def for_key(client: LLMClient, key_id: str | None) -> LLMClient:
    """``client`` itself without a key, else a :class:`KeyedClient` view of it."""
    if key_id is None:
        return client
    base = client.base if isinstance(client, KeyedClient) else client
    return KeyedClient(base, key_id)
