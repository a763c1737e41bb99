"""Where an agent's LLM and tool calls are hooked: :class:`HookContext` says where a call
happens, :class:`CallPlugin` is what hooks those calls.

Below :mod:`arbor.agents.plugins` (whose :class:`~arbor.agents.plugins.Plugin` also hooks
workflow nodes) so that a node context can take call plugins without importing the plugin
module, which names the node context in its own hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from arbor.agents.tools import ToolResult
from arbor.llm.types import ChatRequest, ChatResponse, ToolCall

__all__ = ["CallPlugin", "HookContext"]


@dataclass(frozen=True, slots=True)
class HookContext:
    """Where an LLM or tool call happens: the agent (None for a node's direct LLM call), the
    run, and inside a workflow the node and its visit."""

    agent: str | None
    run_id: str
    node: str | None = None
    visit: int | None = None


class CallPlugin(Protocol):
    """The LLM and tool call hooks (every :class:`~arbor.agents.plugins.Plugin` has them)."""

    async def before_llm_call(self, ctx: HookContext, request: ChatRequest) -> ChatRequest: ...

    async def after_llm_call(
        self, ctx: HookContext, request: ChatRequest, response: ChatResponse
    ) -> ChatResponse: ...

    async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> ToolCall: ...

    async def after_tool_call(
        self, ctx: HookContext, call: ToolCall, result: ToolResult
    ) -> ToolResult: ...
