"""The LLM layer: typed messages, models and providers, and the resilient client pipeline.

Names load on first use so importing the types does not import the SDKs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arbor.core.lazy import lazy_exports

if TYPE_CHECKING:
    from arbor.llm.client import LLMClient
    from arbor.llm.model import EmbeddingModel, EmbeddingsNotSupportedError, Model
    from arbor.llm.types import (
        CallContext,
        ChatRequest,
        ChatResponse,
        EmbeddingRequest,
        EmbeddingResponse,
        Message,
        StreamChunk,
        ToolCall,
        ToolCallDelta,
        ToolSpec,
        Usage,
    )

__all__ = [
    "CallContext",
    "ChatRequest",
    "ChatResponse",
    "EmbeddingModel",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingsNotSupportedError",
    "LLMClient",
    "Message",
    "Model",
    "StreamChunk",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "Usage",
]


__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        name: "arbor.llm.client"
        if name == "LLMClient"
        else "arbor.llm.model"
        if name in ("EmbeddingModel", "EmbeddingsNotSupportedError", "Model")
        else "arbor.llm.types"
        for name in __all__
    },
)
