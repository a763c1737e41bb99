"""Durable workflows: a typed graph of nodes over a typed state, checkpointed after every node."""

from arbor.agents.workflow.checkpoints import (
    CheckpointStore,
    InMemoryCheckpointStore,
    RunEvent,
    StoredRun,
)
from arbor.agents.workflow.context import NodeContext
from arbor.agents.workflow.events import (
    EVENT_TYPES,
    TERMINAL_EVENTS,
    EventHub,
    EventType,
    LLMCallData,
    ToolCallData,
)
from arbor.agents.workflow.graph import END, NodeUpdate, Workflow
from arbor.agents.workflow.runner import NodePlugin, RunResult, WorkflowRunner

__all__ = [
    "END",
    "EVENT_TYPES",
    "TERMINAL_EVENTS",
    "CheckpointStore",
    "EventHub",
    "EventType",
    "InMemoryCheckpointStore",
    "LLMCallData",
    "NodeContext",
    "NodePlugin",
    "NodeUpdate",
    "RunEvent",
    "RunResult",
    "StoredRun",
    "ToolCallData",
    "Workflow",
    "WorkflowRunner",
]
