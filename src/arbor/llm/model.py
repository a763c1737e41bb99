"""The interface every model implementation speaks.

A *model* turns a :class:`ChatRequest` into a response or a stream of chunks in one attempt.
Resilience (retries, limits, breakers, caching, accounting) is not its job: the
:class:`~arbor.llm.client.LLMClient` pipeline wraps every model the same way. Errors must be
:class:`~arbor.core.errors.ArborError` subclasses, translated from the SDK at the adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from arbor.core.errors import ArborError
from arbor.llm.types import ChatRequest, ChatResponse, Message, StreamChunk, Usage

__all__ = ["EmbeddingModel", "EmbeddingsNotSupportedError", "Model"]


class EmbeddingsNotSupportedError(ArborError):
    """The model has no embeddings endpoint (a chat-only model such as a local GGUF): the
    request is wrong, not the upstream, so the service answers 400."""

    kind = "unsupported"

    def __init__(self, message: str, *, model: str = "") -> None:
        super().__init__(message)
        self.model = model


@runtime_checkable
class Model(Protocol):
    #: Provider name, the part of the model id before ``:``.
    provider: str
    #: Model name as the provider knows it.
    name: str

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """One attempt at a non-streaming reply."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        """One attempt at a streamed reply; the last chunk carries usage when known."""
        ...

    def count_tokens(self, messages: list[Message]) -> int:
        """Prompt tokens as this model would count them (an estimate where exact is not
        possible offline)."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads or weights."""
        ...


@runtime_checkable
class EmbeddingModel(Protocol):
    """A model that can also embed text (OpenAI-compatible providers)."""

    provider: str
    name: str

    async def embed(
        self, inputs: list[str], *, dimensions: int | None = None
    ) -> tuple[list[list[float]], Usage]:
        """One attempt: one vector per input, in order, and the usage (estimated if the
        server reports none)."""
        ...
