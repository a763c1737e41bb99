"""The LLM layer: typed messages, models and providers, and the resilient client pipeline.

Names load on first use so importing the types does not import the SDKs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'arbor.llm' has no attribute {name!r}")
    module = {
        "EmbeddingModel": "model",
        "EmbeddingsNotSupportedError": "model",
        "LLMClient": "client",
        "Model": "model",
    }.get(name, "types")
    value = getattr(importlib.import_module(f"arbor.llm.{module}"), name)
    globals()[name] = value
    return value
