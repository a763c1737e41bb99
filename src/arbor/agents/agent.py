"""``Agent``: instructions, a model, tools, a memory policy and an output type.

An agent is a cheap, immutable description; everything a run needs at run time (the
:class:`~arbor.llm.client.LLMClient`, dependencies, memory, the call context) is passed to
:meth:`Agent.run`, so two runs, or two agents, never share hidden state.

The loop: send the conversation and the tool specs; if the model calls tools, run them
(concurrently) and send their results, errors included, so the model can correct itself;
otherwise parse the output, re-asking with the validation error a bounded number of times.
The loop lives in :mod:`arbor.agents._loop`; the values it makes (:mod:`arbor.agents.results`)
and the errors it raises (:mod:`arbor.agents.errors`, drawn there) are re-exported here.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Generic, TypeVar, cast, overload

import jinja2
from pydantic import BaseModel

from arbor.agents import _loop, _templates
from arbor.agents.errors import (
    InstructionsError,
)
from arbor.agents.memory import Memory, MemoryPolicy, Summarizer
from arbor.agents.plugins import NO_HOOKS, Hooks, Plugin
from arbor.agents.results import (
    AgentEvent,
    AgentResult,
    EventCallback,
)
from arbor.agents.tools import Tool
from arbor.core.ids import new_id
from arbor.llm.client import LLMClient
from arbor.llm.types import CallContext, ChatRequest, ChatResponse, Message

__all__ = ["SUMMARIZE", "Agent"]

OutputT = TypeVar("OutputT")

SUMMARIZE = (
    "Summarize the conversation below for your own later use: keep facts, decisions, "
    "open questions and tool results that still matter; drop pleasantries. Be brief."
)


# Frozen, so every agent without its own policy can share it (agents are made by the
# thousand: instantiation cost matters).
_DEFAULT_POLICY = MemoryPolicy()


class Agent(Generic[OutputT]):
    """A model with instructions and tools, producing ``OutputT`` (``str`` by default).

    ``instructions`` is a Jinja2 template rendered per run with ``deps`` (and, when deps is
    a mapping, its keys) in a sandbox with strict undefined variables.
    """

    __slots__ = (
        "_tools",
        "instructions",
        "max_output_retries",
        "max_steps",
        "memory_policy",
        "model",
        "name",
        "output_type",
        "temperature",
    )

    @overload
    def __init__(
        self: Agent[str],
        name: str,
        instructions: str = "",
        *,
        model: str | None = None,
        tools: Sequence[Tool] = (),
        memory_policy: MemoryPolicy | None = None,
        output_type: None = None,
        max_steps: int = 10,
        max_output_retries: int = 2,
        temperature: float | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        name: str,
        instructions: str = "",
        *,
        model: str | None = None,
        tools: Sequence[Tool] = (),
        memory_policy: MemoryPolicy | None = None,
        output_type: type[OutputT],
        max_steps: int = 10,
        max_output_retries: int = 2,
        temperature: float | None = None,
    ) -> None: ...

    def __init__(
        self,
        name: str,
        instructions: str = "",
        *,
        model: str | None = None,
        tools: Sequence[Tool] = (),
        memory_policy: MemoryPolicy | None = None,
        output_type: type[Any] | None = None,
        max_steps: int = 10,
        max_output_retries: int = 2,
        temperature: float | None = None,
    ) -> None:
        output = str if output_type is None else output_type
        if output is not str and not (isinstance(output, type) and issubclass(output, BaseModel)):
            raise TypeError(f"output_type must be str or a pydantic model, not {output!r}")
        if max_steps < 1 or max_output_retries < 0:
            raise ValueError("max_steps must be >= 1 and max_output_retries >= 0")
        self._tools: dict[str, Tool] = {}
        for t in tools:
            if t.name in self._tools:
                raise ValueError(f"agent {name!r} has two tools named {t.name!r}")
            self._tools[t.name] = t
        self.name = name
        self.instructions = instructions
        self.model = model
        self.memory_policy = memory_policy or _DEFAULT_POLICY
        self.output_type: type[OutputT] = cast("type[OutputT]", output)
        self.max_steps = max_steps
        self.max_output_retries = max_output_retries
        self.temperature = temperature

    def __repr__(self) -> str:
        return f"Agent(name={self.name!r}, tools={list(self._tools)!r})"

    @property
    def tools(self) -> tuple[Tool, ...]:
        return tuple(self._tools.values())

    @property
    def has_instructions(self) -> bool:
        """Whether a run starts with a system message (subclasses that render their prompt
        from elsewhere, like role agents, say yes with empty ``instructions``)."""
        return bool(self.instructions)

    def render_instructions(self, deps: Any = None, *, run_id: str = "") -> str:
        variables: dict[str, Any] = dict(deps) if isinstance(deps, Mapping) else {}
        variables.update(deps=deps, agent=self.name)
        try:
            return _templates.render_instructions(self.instructions, variables)
        except jinja2.TemplateError as exc:
            raise InstructionsError(
                f"agent {self.name!r}: instructions failed to render: {exc}",
                agent=self.name,
                run_id=run_id,
            ) from exc

    def new_memory(
        self,
        client: LLMClient,
        model: str | None = None,
        complete: Callable[[ChatRequest], Awaitable[ChatResponse]] | None = None,
    ) -> Memory:
        """Memory under this agent's policy; summaries are written by the agent's model
        (through ``complete`` when given: a durable run records them)."""
        summarizer = None
        if self.memory_policy.strategy == "summarize":
            summarizer = _summarizer(
                complete or client.complete, model or self.model or client.settings.default_model
            )
        return Memory(self.memory_policy, summarizer=summarizer)

    async def run(
        self,
        prompt: str,
        *,
        client: LLMClient,
        deps: Any = None,
        memory: Memory | None = None,
        context: CallContext | None = None,
        plugins: Sequence[Plugin] = (),
    ) -> AgentResult[OutputT]:
        """Run to the output. ``plugins`` hook this run's LLM and tool calls."""
        hooks = Hooks(plugins) if plugins else NO_HOOKS
        result = await _loop.run(self, prompt, client, deps, memory, context, hooks=hooks)
        return cast(AgentResult[OutputT], result)

    async def run_stream(
        self,
        prompt: str,
        *,
        client: LLMClient,
        deps: Any = None,
        memory: Memory | None = None,
        context: CallContext | None = None,
        on_chunk: EventCallback | None = None,
        plugins: Sequence[Plugin] = (),
    ) -> AsyncGenerator[AgentEvent, None]:
        """Events as they happen: text deltas, tool call start/end, then the result.
        ``on_chunk`` (sync or async) sees every event before it is yielded. Stopping early
        closes the model stream. ``plugins`` hook the tool calls and the request of each
        model call (the text is streamed as it comes, before ``after_llm_call`` could see it)."""
        hooks = Hooks(plugins) if plugins else NO_HOOKS
        events = _loop.drive(self, prompt, client, deps, memory, context, stream=True, hooks=hooks)
        async with aclosing(events):
            async for event in events:
                if on_chunk is not None:
                    maybe = on_chunk(event)
                    if inspect.isawaitable(maybe):
                        await maybe
                yield event

    def call_context(self, context: CallContext | None) -> CallContext:
        """The caller's context with a fresh run id and this agent's name filled in."""
        ctx = context or CallContext()
        updates: dict[str, str] = {}
        if ctx.run_id is None:
            updates["run_id"] = new_id("run")
        if ctx.agent_id is None:
            updates["agent_id"] = self.name
        return ctx.model_copy(update=updates) if updates else ctx


def _summarizer(
    complete: Callable[[ChatRequest], Awaitable[ChatResponse]], model: str
) -> Summarizer:
    async def summarize(messages: list[Message]) -> str:
        transcript = "\n".join(f"{m.role}: {_as_text(m)}" for m in messages)
        request = ChatRequest(
            model=model, messages=[Message.system(SUMMARIZE), Message.user(transcript)]
        )
        return (await complete(request)).text

    return summarize


def _as_text(message: Message) -> str:
    calls = " ".join(f"[calls {c.name}({c.arguments})]" for c in message.tool_calls or ())
    return " ".join(part for part in (message.content or "", calls) if part)
