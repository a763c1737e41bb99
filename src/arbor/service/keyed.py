"""An :class:`~arbor.llm.client.LLMClient` view that attributes every call to one API key.

Workflow nodes and agents build their own requests (the built-in ones only set ``run_id`` in
the :class:`~arbor.llm.types.CallContext`), so a run started by an API key would otherwise
escape that key's rpm/tpm limits and budget. The view shares the whole pipeline of the
client it wraps (cache, limiter, breakers, budgets, usage sink, models) and only stamps
``key_id`` onto requests that carry none.
"""

from __future__ import annotations

from arbor.llm.client import LLMClient
from arbor.llm.view import ClientView

__all__ = ["KeyedClient", "for_key"]


class KeyedClient(ClientView):
    """``base`` with ``key_id`` stamped on each request; closing it leaves ``base`` open."""

    def __init__(self, base: LLMClient, key_id: str) -> None:
        super().__init__(base, key_id=key_id)
        self.key_id = key_id


def for_key(client: LLMClient, key_id: str | None) -> LLMClient:
    """``client`` itself without a key, else a :class:`KeyedClient` view of it."""
    if key_id is None:
        return client
    base = client.base if isinstance(client, KeyedClient) else client
    return KeyedClient(base, key_id)
