"""``AgentSpec``: the parts of an agent that a run reads.

The loop (:mod:`arbor.agents._loop`) and a workflow node's ``run_agent`` take this protocol,
not :class:`~arbor.agents.agent.Agent`, so neither imports the agent module: the agent
imports the loop, never the other way round. ``Agent`` and its subclasses satisfy it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from arbor.agents.memory import Memory
from arbor.agents.tools import Tool
from arbor.llm.types import CallContext, ChatRequest, ChatResponse

if TYPE_CHECKING:
    from arbor.llm.client import LLMClient

__all__ = ["AgentSpec"]

OutputT_co = TypeVar("OutputT_co", covariant=True)


class AgentSpec(Protocol[OutputT_co]):
    """An agent as its run sees it: name, model, tools, limits, output type, and how to
    make its instructions, memory and call context."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str | None: ...

    @property
    def tools(self) -> tuple[Tool, ...]: ...

    @property
    def output_type(self) -> type[OutputT_co]: ...

    @property
    def temperature(self) -> float | None: ...

    @property
    def max_steps(self) -> int: ...

    @property
    def max_output_retries(self) -> int: ...

    @property
    def has_instructions(self) -> bool: ...

    def render_instructions(self, deps: Any = None, *, run_id: str = "") -> str: ...

    def new_memory(
        self,
        client: LLMClient,
        model: str | None = None,
        complete: Callable[[ChatRequest], Awaitable[ChatResponse]] | None = None,
    ) -> Memory: ...

    def call_context(self, context: CallContext | None) -> CallContext: ...
