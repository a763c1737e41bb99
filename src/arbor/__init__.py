"""Arbor: run teams of LLM agents in production.

The public API grows with each layer; every name is also importable from its layer. Names
load on first use, so ``import arbor`` (and the CLI's start-up) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arbor.core.config import Settings, load_settings
    from arbor.core.errors import ArborError
    from arbor.llm.client import LLMClient
    from arbor.llm.types import ChatRequest, ChatResponse, Message, StreamChunk, Usage

__all__ = [
    "ArborError",
    "ChatRequest",
    "ChatResponse",
    "LLMClient",
    "Message",
    "Settings",
    "StreamChunk",
    "Usage",
    "load_settings",
]

__version__ = "0.1.0"

_WHERE = {
    "ArborError": "arbor.core.errors",
    "ChatRequest": "arbor.llm.types",
    "ChatResponse": "arbor.llm.types",
    "LLMClient": "arbor.llm.client",
    "Message": "arbor.llm.types",
    "Settings": "arbor.core.config",
    "StreamChunk": "arbor.llm.types",
    "Usage": "arbor.llm.types",
    "load_settings": "arbor.core.config",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'arbor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
