"""Durable workflows: a typed graph of nodes over a typed state, checkpointed after every node."""

from arbor.agents.workflow.checkpoints import (
    CheckpointStore,
    InMemoryCheckpointStore,
    RunEvent,
    StoredRun,
)
from arbor.agents.workflow.graph import END, Workflow
from arbor.agents.workflow.runner import NodeContext, NodePlugin, RunResult, WorkflowRunner

__all__ = [
    "END",
    "CheckpointStore",
    "InMemoryCheckpointStore",
    "NodeContext",
    "NodePlugin",
    "RunEvent",
    "RunResult",
    "StoredRun",
    "Workflow",
    "WorkflowRunner",
]
