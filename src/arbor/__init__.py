"""Arbor: run teams of LLM agents in production.

Everything a user builds with is here: agents and their tools, workflows and their runner,
the LLM client with its request and reply types, settings, and the errors. Test doubles live
in :mod:`arbor.testing`; each application has its own package (:mod:`arbor.apps.renode`,
:mod:`arbor.apps.team`, :mod:`arbor.autogen`). Names load on first use, so ``import arbor``
(and the CLI's start-up) stays fast.

>>> from arbor import Agent, LLMClient, Workflow, tool    # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arbor.core.lazy import lazy_exports

if TYPE_CHECKING:
    from arbor.agents import (
        Agent,
        AgentDefinition,
        AgentError,
        AgentResult,
        MaxStepsExceededError,
        Memory,
        MemoryPolicy,
        OutputValidationError,
        Plugin,
        Tool,
        ToolContext,
        tool,
    )
    from arbor.agents.workflow import (
        END,
        CheckpointStore,
        InMemoryCheckpointStore,
        NodeContext,
        RunResult,
        Workflow,
        WorkflowRunner,
    )
    from arbor.agents.workflow.registry import WorkflowRegistry
    from arbor.agents.workflow.sql import SQLCheckpointStore
    from arbor.core.config import Settings, load_settings
    from arbor.core.errors import (
        ArborError,
        AuthError,
        BudgetExceededError,
        CircuitOpenError,
        ConfigError,
        ConflictError,
        ContextTooLongError,
        InvalidRequestError,
        LLMTimeoutError,
        NotFoundError,
        ProviderConnectionError,
        ProviderError,
        ProviderHTTPError,
        RateLimitedError,
        ToolError,
        UnknownModelError,
        WorkflowError,
    )
    from arbor.llm import (
        CallContext,
        ChatRequest,
        ChatResponse,
        EmbeddingRequest,
        EmbeddingResponse,
        LLMClient,
        Message,
        Model,
        StreamChunk,
        ToolCall,
        Usage,
    )
    from arbor.runtime import BatchOptions, BatchService, BatchSpec
    from arbor.store import Database

__version__ = "0.1.0"

#: Public name → the module it is defined in (imported on first use).
_HOMES = {
    # agents and tools
    "Agent": "arbor.agents",
    "AgentDefinition": "arbor.agents",
    "AgentError": "arbor.agents",
    "AgentResult": "arbor.agents",
    "MaxStepsExceededError": "arbor.agents",
    "Memory": "arbor.agents",
    "MemoryPolicy": "arbor.agents",
    "OutputValidationError": "arbor.agents",
    "Plugin": "arbor.agents",
    "Tool": "arbor.agents",
    "ToolContext": "arbor.agents",
    "tool": "arbor.agents",
    # workflows
    "END": "arbor.agents.workflow",
    "CheckpointStore": "arbor.agents.workflow",
    "InMemoryCheckpointStore": "arbor.agents.workflow",
    "NodeContext": "arbor.agents.workflow",
    "RunResult": "arbor.agents.workflow",
    "SQLCheckpointStore": "arbor.agents.workflow.sql",
    "Workflow": "arbor.agents.workflow",
    "WorkflowRegistry": "arbor.agents.workflow.registry",
    "WorkflowRunner": "arbor.agents.workflow",
    # the LLM client
    "CallContext": "arbor.llm",
    "ChatRequest": "arbor.llm",
    "ChatResponse": "arbor.llm",
    "EmbeddingRequest": "arbor.llm",
    "EmbeddingResponse": "arbor.llm",
    "LLMClient": "arbor.llm",
    "Message": "arbor.llm",
    "Model": "arbor.llm",
    "StreamChunk": "arbor.llm",
    "ToolCall": "arbor.llm",
    "Usage": "arbor.llm",
    # settings, storage, batches
    "BatchOptions": "arbor.runtime",
    "BatchService": "arbor.runtime",
    "BatchSpec": "arbor.runtime",
    "Database": "arbor.store",
    "Settings": "arbor.core.config",
    "load_settings": "arbor.core.config",
    # errors (the tree is drawn in arbor.core.errors)
    "ArborError": "arbor.core.errors",
    "AuthError": "arbor.core.errors",
    "BudgetExceededError": "arbor.core.errors",
    "CircuitOpenError": "arbor.core.errors",
    "ConfigError": "arbor.core.errors",
    "ConflictError": "arbor.core.errors",
    "ContextTooLongError": "arbor.core.errors",
    "InvalidRequestError": "arbor.core.errors",
    "LLMTimeoutError": "arbor.core.errors",
    "NotFoundError": "arbor.core.errors",
    "ProviderConnectionError": "arbor.core.errors",
    "ProviderError": "arbor.core.errors",
    "ProviderHTTPError": "arbor.core.errors",
    "RateLimitedError": "arbor.core.errors",
    "ToolError": "arbor.core.errors",
    "UnknownModelError": "arbor.core.errors",
    "WorkflowError": "arbor.core.errors",
}

__all__ = [
    "END",
    "Agent",
    "AgentDefinition",
    "AgentError",
    "AgentResult",
    "ArborError",
    "AuthError",
    "BatchOptions",
    "BatchService",
    "BatchSpec",
    "BudgetExceededError",
    "CallContext",
    "ChatRequest",
    "ChatResponse",
    "CheckpointStore",
    "CircuitOpenError",
    "ConfigError",
    "ConflictError",
    "ContextTooLongError",
    "Database",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "InMemoryCheckpointStore",
    "InvalidRequestError",
    "LLMClient",
    "LLMTimeoutError",
    "MaxStepsExceededError",
    "Memory",
    "MemoryPolicy",
    "Message",
    "Model",
    "NodeContext",
    "NotFoundError",
    "OutputValidationError",
    "Plugin",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderHTTPError",
    "RateLimitedError",
    "RunResult",
    "SQLCheckpointStore",
    "Settings",
    "StreamChunk",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "UnknownModelError",
    "Usage",
    "Workflow",
    "WorkflowError",
    "WorkflowRegistry",
    "WorkflowRunner",
    "load_settings",
    "tool",
]

__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
