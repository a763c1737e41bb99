"""What an agent run produces: its result and the events a streamed run yields.

Plain values, apart from the agent and the loop that make them, so that both (and a
workflow node that runs an agent) import them without importing each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from arbor.agents.tools import ToolResult
from arbor.llm.types import Message, ToolCall, Usage

__all__ = [
    "AgentEvent",
    "AgentResult",
    "EventCallback",
    "RunFinished",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallRecord",
    "ToolCallStarted",
]

OutputT = TypeVar("OutputT")


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """One tool call of a run and what it returned."""

    call: ToolCall
    result: ToolResult


@dataclass(slots=True)
class AgentResult(Generic[OutputT]):
    """What a run produced. ``messages`` are this run's new messages (prompt onward);
    ``steps`` counts model calls, re-asks included; usage and cost are summed over them."""

    output: OutputT
    messages: list[Message]
    usage: Usage
    cost_usd: float
    steps: int
    tool_calls: list[ToolCallRecord]
    run_id: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    call: ToolCall


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    call: ToolCall
    result: ToolResult


@dataclass(frozen=True, slots=True)
class RunFinished(Generic[OutputT]):
    """The last event of a run, carrying its result."""

    result: AgentResult[OutputT]


AgentEvent: TypeAlias = TextDelta | ToolCallStarted | ToolCallFinished | RunFinished[Any]
EventCallback: TypeAlias = Callable[[AgentEvent], Awaitable[None] | None]
