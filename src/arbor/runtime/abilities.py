"""The Arboretum abilities as tools an agent can call: Echo, QueryLLM and BatchQuery.

Tools are plain objects (no registry): :func:`abilities` builds the three over one
:class:`~arbor.llm.client.LLMClient`, so their model calls go through the same cache, rate
limits, breaker, retries and budgets as everything else, and hands them to an agent
(``Agent(..., tools=abilities(client))`` or a definition naming ``echo``, ``query_llm``,
``batch_query`` against ``{t.name: t for t in abilities(client)}``).

BatchQuery is for a *small* fan-out inside one agent step (at most
:data:`MAX_BATCH_PROMPTS` prompts, answered concurrently, one failure reported in its slot
and not failing the others); a dataset of thousands is a batch (``arbor batch run``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import Field

from arbor.agents.tools import Tool, tool
from arbor.core.errors import ArborError
from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest, Message

__all__ = ["MAX_BATCH_PROMPTS", "abilities"]

#: Largest fan-out BatchQuery accepts in one call.
MAX_BATCH_PROMPTS = 50


def abilities(client: LLMClient, *, model: str | None = None, concurrency: int = 8) -> list[Tool]:
    """Echo, QueryLLM and BatchQuery over ``client``; ``model`` defaults to the client's
    default model, ``concurrency`` bounds BatchQuery's calls in flight."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    chosen = model or client.settings.default_model

    async def ask(prompt: str, temperature: float | None) -> str:
        request = ChatRequest(
            model=chosen, messages=[Message.user(prompt)], temperature=temperature
        )
        return (await client.complete(request)).text

    @tool(name="echo")
    def echo(text: str) -> str:
        """Return the text unchanged (a probe that the tool path works).

        Args:
            text: What to echo back.
        """
        return text

    @tool(name="query_llm", timeout=None)
    async def query_llm(prompt: str, temperature: float | None = None) -> str:
        """Ask the language model one question and return its answer.

        Args:
            prompt: The question or instruction.
            temperature: Sampling temperature (0 = deterministic, cacheable).
        """
        return await ask(prompt, temperature)

    @tool(name="batch_query", timeout=None)
    async def batch_query(
        prompts: Annotated[list[str], Field(min_length=1, max_length=MAX_BATCH_PROMPTS)],
        temperature: float | None = None,
    ) -> list[str]:
        """Ask the language model several independent questions at once; the answers come
        back in the same order (a failed one as "error: ...").

        Args:
            prompts: The questions, at most 50.
            temperature: Sampling temperature for every question.
        """
        gate = asyncio.Semaphore(concurrency)

        async def one(prompt: str) -> str:
            async with gate:
                try:
                    return await ask(prompt, temperature)
                except ArborError as exc:
                    return f"error: {exc.kind}: {exc}"

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    return [echo, query_llm, batch_query]
