"""Exactly-once LLM and tool calls for an agent run inside a workflow node.

:class:`NodeJournal` is the :class:`~arbor.agents._loop.Journal` a node hands to an agent
run: every model call and tool call goes through the node's idempotency records
(``NodeContext.once``), keyed by the agent run's order within the node visit, the model
step, and for tools the call's index and id. A resumed run replays the recorded replies
and tool results, so the conversation (and the output) is rebuilt without calling the
model or repeating a side effect. A call that happens for real is also an ``llm_call`` or
``tool_call`` event; a replayed one is not (it has its event already).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from arbor.agents.tools import ToolResult
from arbor.agents.workflow.events import LLMCallData, RunEvent, ToolCallData
from arbor.llm.types import ChatRequest, ChatResponse, ToolCall

if TYPE_CHECKING:
    from arbor.agents.workflow.context import NodeContext

__all__ = ["NodeJournal", "llm_call_event"]


def llm_call_event(node: str, agent: str | None, response: ChatResponse) -> RunEvent:
    data = LLMCallData(
        agent=agent,
        model=response.model,
        input_tokens=response.usage.input_tokens,
        output_tokens=response.usage.output_tokens,
        cost_usd=response.cost_usd,
        latency_ms=response.latency_ms,
        cached=response.cached,
    )
    return RunEvent("llm_call", node, dict(data))


class NodeJournal:
    """Routes one agent run's calls through a node visit's idempotency records."""

    __slots__ = ("agent", "ctx", "prefix")

    def __init__(self, ctx: NodeContext, agent: str, index: int) -> None:
        self.ctx = ctx
        self.agent = agent
        self.prefix = f"agent:{agent}#{index}"

    @property
    def node(self) -> str:
        return self.ctx.node

    @property
    def visit(self) -> int:
        return self.ctx.visit

    async def llm(
        self, name: str, request: ChatRequest, call: Callable[[], Awaitable[ChatResponse]]
    ) -> ChatResponse:
        ctx = self.ctx

        async def fresh() -> dict[str, Any]:
            response = await call()
            await ctx.emit(llm_call_event(ctx.node, self.agent, response))
            return response.model_dump(mode="json")

        return ChatResponse.model_validate(await ctx.once(f"{self.prefix}:{name}", fresh))

    async def tool(
        self, step: int, index: int, call: ToolCall, run: Callable[[str], Awaitable[ToolResult]]
    ) -> ToolResult:
        ctx = self.ctx
        name = f"{self.prefix}:tool:{step}:{index}:{call.id}"

        async def fresh() -> dict[str, Any]:
            started = time.perf_counter()
            # The key a side-effecting tool sees is stable across resumes of this run.
            result = await run(f"{ctx.run_id}:{ctx.key(name)}")
            data = ToolCallData(
                agent=self.agent,
                tool=call.name,
                call_id=call.id,
                ok=result.ok,
                error=result.error,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            await ctx.emit(RunEvent("tool_call", ctx.node, dict(data)))
            return dataclasses.asdict(result)

        return ToolResult(**await ctx.once(name, fresh))
