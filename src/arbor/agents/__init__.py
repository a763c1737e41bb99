"""The agents layer: agents, their tools and their bounded memory.

Everything is passed in explicitly (the LLM client, dependencies, memory); there are no
global registries, so independent agents coexist in one process.
"""

from __future__ import annotations

from arbor.agents.agent import Agent
from arbor.agents.definitions import (
    AgentDefinition,
    AgentDefinitionError,
    RoleAgent,
    load_definitions,
)
from arbor.agents.errors import (
    AgentError,
    InstructionsError,
    MaxStepsExceededError,
    OutputValidationError,
)
from arbor.agents.hooks import CallPlugin
from arbor.agents.memory import Memory, MemoryPolicy
from arbor.agents.plugins import HookContext, Plugin, PluginError, Reask, ValidationPlugin
from arbor.agents.results import (
    AgentEvent,
    AgentResult,
    RunFinished,
    TextDelta,
    ToolCallFinished,
    ToolCallRecord,
    ToolCallStarted,
)
from arbor.agents.spec import AgentSpec
from arbor.agents.supervision import AgentDisabledError, Supervisor
from arbor.agents.tools import Tool, ToolContext, ToolResult, tool

__all__ = [
    "Agent",
    "AgentDefinition",
    "AgentDefinitionError",
    "AgentDisabledError",
    "AgentError",
    "AgentEvent",
    "AgentResult",
    "AgentSpec",
    "CallPlugin",
    "HookContext",
    "InstructionsError",
    "MaxStepsExceededError",
    "Memory",
    "MemoryPolicy",
    "OutputValidationError",
    "Plugin",
    "PluginError",
    "Reask",
    "RoleAgent",
    "RunFinished",
    "Supervisor",
    "TextDelta",
    "Tool",
    "ToolCallFinished",
    "ToolCallRecord",
    "ToolCallStarted",
    "ToolContext",
    "ToolResult",
    "ValidationPlugin",
    "load_definitions",
    "tool",
]
