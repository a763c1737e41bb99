"""The agent loop behind :meth:`Agent.run` and :meth:`Agent.run_stream`, and its parts:
tool dispatch, stream assembly and output parsing.

One driver serves both: it yields events, and ``run`` keeps only the last one. The loop reads
an agent through :class:`~arbor.agents.spec.AgentSpec` and makes the values of
:mod:`arbor.agents.results`, so it never imports the agent module (which imports it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from arbor.agents.errors import MaxStepsExceededError, OutputValidationError
from arbor.agents.hooks import HookContext
from arbor.agents.memory import Memory
from arbor.agents.plugins import NO_HOOKS, Hooks, PluginError, Reask
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
from arbor.agents.tools import Tool, ToolContext, ToolResult
from arbor.llm.client import LLMClient
from arbor.llm.types import (
    CallContext,
    ChatRequest,
    ChatResponse,
    Message,
    StreamChunk,
    ToolCall,
    Usage,
)

__all__ = [
    "Journal",
    "StreamAssembler",
    "add_usage",
    "call_tools",
    "drive",
    "parse_output",
    "response_format",
    "run",
]


REASK = (
    "Your reply did not match the required output schema: {problem}. "
    "Reply again with only a JSON object that matches the schema."
)


class Journal(Protocol):
    """Makes a run's LLM and tool calls durable (a workflow node provides one): a call
    already recorded under its key returns the recorded result instead of happening again.
    Keys follow call order: ``name`` is ``llm:<step>`` or ``summary:<n>``; a tool call is
    keyed by its model step, its index in that step's reply and its id."""

    @property
    def node(self) -> str: ...

    @property
    def visit(self) -> int: ...

    async def llm(
        self, name: str, request: ChatRequest, call: Callable[[], Awaitable[ChatResponse]]
    ) -> ChatResponse: ...

    async def tool(
        self, step: int, index: int, call: ToolCall, run: Callable[[str], Awaitable[ToolResult]]
    ) -> ToolResult: ...


async def run(
    agent: AgentSpec[Any],
    prompt: str,
    client: LLMClient,
    deps: Any,
    memory: Memory | None,
    context: CallContext | None,
    *,
    hooks: Hooks = NO_HOOKS,
    journal: Journal | None = None,
) -> AgentResult[Any]:
    """Drive a run to its result (no streaming)."""
    events = drive(
        agent, prompt, client, deps, memory, context, stream=False, hooks=hooks, journal=journal
    )
    async with aclosing(events):
        async for event in events:
            if isinstance(event, RunFinished):
                return event.result
    raise AssertionError("unreachable: a run either finishes or raises")


async def drive(
    agent: AgentSpec[Any],
    prompt: str,
    client: LLMClient,
    deps: Any,
    memory: Memory | None,
    context: CallContext | None,
    *,
    stream: bool,
    hooks: Hooks = NO_HOOKS,
    journal: Journal | None = None,
) -> AsyncGenerator[AgentEvent, None]:
    """Run ``agent`` on ``prompt``; the last event is :class:`RunFinished` (or it raises)."""
    if stream and journal is not None:
        raise ValueError("a journaled (durable) run does not stream")
    ctx = agent.call_context(context)
    model = agent.model or client.settings.default_model
    if memory is None:
        memory = agent.new_memory(client, model, _summary_calls(client, journal))
    if agent.has_instructions:
        memory.add(Message.system(agent.render_instructions(deps, run_id=ctx.run_id or "")))
    run = _Run(agent, client, ctx, model, memory, hooks, journal)
    run.remember(Message.user(prompt))
    while True:
        if memory.needs_compaction:
            await memory.compact()
        if stream:
            async for delta in run.stream_reply():
                yield delta
            reply = run.last_reply
        else:
            reply = await run.complete_reply()
        if reply.tool_calls:
            async for event in run.tool_round(reply):
                yield event
            continue
        finished = run.finish(reply)
        if finished is not None:
            yield finished
            return


class _Run:
    """The state of one run: the conversation so far and the running totals."""

    def __init__(
        self,
        agent: AgentSpec[Any],
        client: LLMClient,
        ctx: CallContext,
        model: str,
        memory: Memory,
        hooks: Hooks = NO_HOOKS,
        journal: Journal | None = None,
    ) -> None:
        self.agent = agent
        self.hooks = hooks
        self.journal = journal
        self.hctx = HookContext(
            agent.name,
            ctx.run_id or "",
            journal.node if journal is not None else None,
            journal.visit if journal is not None else None,
        )
        #: Why a plugin rejected the last reply (:class:`Reask`), if it did.
        self.rejected: str | None = None
        self.client = client
        self.ctx = ctx
        self.run_id = ctx.run_id or ""
        self.model = model
        self.memory = memory
        self.new: list[Message] = []
        self.specs = [t.spec() for t in agent.tools] or None
        self.tools = {t.name: t for t in agent.tools}
        self.format = response_format(agent.output_type)
        self.usage = Usage()
        self.cost = 0.0
        self.steps = 0
        self.reasks = 0
        self.records: list[ToolCallRecord] = []
        self.last_reply = Message.assistant(None)

    def remember(self, message: Message) -> None:
        self.memory.add(message)
        self.new.append(message)

    def request(self) -> ChatRequest:
        return ChatRequest(
            model=self.model,
            messages=self.memory.messages(),
            tools=self.specs,
            response_format=self.format,
            temperature=self.agent.temperature,
            context=self.ctx,
        )

    def account(self, usage: Usage, cost: float) -> None:
        self.usage = add_usage(self.usage, usage)
        self.cost += cost
        self.steps += 1

    async def complete_reply(self) -> Message:
        request = await self.hooks.before_llm_call(self.hctx, self.request())
        client = self.client
        if self.journal is None:
            response = await client.complete(request)
        else:
            response = await self.journal.llm(
                f"llm:{self.steps}", request, lambda: client.complete(request)
            )
        self.account(response.usage, response.cost_usd)
        try:
            response = await self.hooks.after_llm_call(self.hctx, request, response)
        except Reask as reask:
            if response.message.tool_calls:  # its tool calls would go unanswered
                raise PluginError(
                    f"plugin {reask.plugin} re-asked a reply that calls tools "
                    f"({reask.problem}); Reask is for final replies",
                    plugin=reask.plugin,
                    hook="after_llm_call",
                    run_id=self.run_id,
                ) from reask
            self.rejected = reask.problem
        return response.message

    async def stream_reply(self) -> AsyncIterator[TextDelta]:
        assembler = StreamAssembler()
        async for chunk in self.client.stream(self.request()):
            assembler.add(chunk)
            if chunk.content:
                yield TextDelta(chunk.content)
        self.account(assembler.usage, assembler.cost_usd)
        self.last_reply = assembler.message()

    async def tool_round(self, reply: Message) -> AsyncIterator[AgentEvent]:
        agent = self.agent
        calls = reply.tool_calls or []
        # Re-asks for valid output do not count: max_steps bounds the tool loop.
        if self.steps - self.reasks >= agent.max_steps:
            raise MaxStepsExceededError(
                f"agent {agent.name!r} was still calling tools after {agent.max_steps} step(s)",
                max_steps=agent.max_steps,
                agent=agent.name,
                run_id=self.run_id,
            )
        self.remember(reply)
        for call in calls:
            yield ToolCallStarted(call)
        results = await call_tools(
            self.tools,
            calls,
            self.run_id,
            agent.name,
            hooks=self.hooks,
            hctx=self.hctx,
            journal=self.journal,
            step=self.steps - 1,
        )
        for call, result in zip(calls, results, strict=True):
            self.records.append(ToolCallRecord(call, result))
            self.remember(Message.tool(call.id, result.content))
            yield ToolCallFinished(call, result)

    def finish(self, reply: Message) -> RunFinished[Any] | None:
        """The final event, or ``None`` after queueing a re-ask for invalid output."""
        agent = self.agent
        self.remember(reply)
        text = reply.content or ""
        value, problem = parse_output(text, agent.output_type)
        if self.rejected is not None:
            value, problem, self.rejected = None, self.rejected, None
        if problem is None:
            result = AgentResult[Any](
                value, self.new, self.usage, self.cost, self.steps, self.records, self.run_id
            )
            return RunFinished(result)
        if self.reasks >= agent.max_output_retries:
            raise OutputValidationError(
                f"agent {agent.name!r}: output does not match {agent.output_type.__name__} "
                f"after {self.reasks + 1} attempt(s): {problem}",
                last_output=text,
                attempts=self.reasks + 1,
                agent=agent.name,
                run_id=self.run_id,
            )
        self.reasks += 1
        self.remember(Message.user(REASK.format(problem=problem)))
        return None


def add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cached_input_tokens=a.cached_input_tokens + b.cached_input_tokens,
        estimated=a.estimated or b.estimated,
    )


async def call_tools(
    tools: Mapping[str, Tool],
    calls: Sequence[ToolCall],
    run_id: str,
    agent: str,
    *,
    hooks: Hooks = NO_HOOKS,
    hctx: HookContext | None = None,
    journal: Journal | None = None,
    step: int = 0,
) -> list[ToolResult]:
    """Run every call concurrently; results in call order. Unknown tools are errors the
    model can read, like any other tool failure."""
    where = hctx or HookContext(agent, run_id)

    async def one(index: int, call: ToolCall) -> ToolResult:
        call = await hooks.before_tool_call(where, call)

        async def execute(key: str) -> ToolResult:
            found = tools.get(call.name)
            if found is None:
                known = ", ".join(sorted(tools)) or "none"
                return ToolResult.failure(f"unknown tool '{call.name}' (available: {known})")
            context = ToolContext(
                run_id=run_id, agent=agent, tool_call_id=call.id, idempotency_key=key
            )
            return await found.invoke(call.arguments, context)

        if journal is None:
            result = await execute(f"{run_id}:{agent}:{call.id}")
        else:
            result = await journal.tool(step, index, call, execute)
        return await hooks.after_tool_call(where, call, result)

    if len(calls) == 1:
        return [await one(0, calls[0])]
    return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(calls))))


def _summary_calls(
    client: LLMClient, journal: Journal | None
) -> Callable[[ChatRequest], Awaitable[ChatResponse]]:
    """How memory summaries reach the model: through the journal in a durable run."""
    if journal is None:
        return client.complete
    count = 0

    async def complete(request: ChatRequest) -> ChatResponse:
        nonlocal count
        count += 1
        return await journal.llm(f"summary:{count}", request, lambda: client.complete(request))

    return complete


def response_format(output_type: type[Any]) -> dict[str, Any] | None:
    """JSON-schema output for pydantic output types; ``None`` for plain text."""
    if output_type is str:
        return None
    assert issubclass(output_type, BaseModel)
    return {
        "type": "json_schema",
        "json_schema": {"name": output_type.__name__, "schema": output_type.model_json_schema()},
    }


def parse_output(text: str, output_type: type[Any]) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, what is wrong)`` in words the model can act on."""
    if output_type is str:
        return text, None
    try:
        return output_type.model_validate_json(_strip_fence(text)), None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'output'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        return None, problems


def _strip_fence(text: str) -> str:
    """Small models like to wrap JSON in a Markdown fence; accept that."""
    body = text.strip()
    if body.startswith("```") and body.endswith("```"):
        body = body[3:-3]
        body = body.split("\n", 1)[1] if "\n" in body else body
    return body


@dataclass
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class StreamAssembler:
    """Builds the assistant message, usage and cost from a stream's chunks."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, _PendingCall] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0

    def add(self, chunk: StreamChunk) -> None:
        if chunk.content:
            self.text.append(chunk.content)
        for delta in chunk.tool_calls or ():
            pending = self.calls.setdefault(delta.index, _PendingCall())
            pending.id = delta.id or pending.id
            pending.name = delta.name or pending.name
            if delta.arguments:
                pending.arguments.append(delta.arguments)
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.cost_usd is not None:
            self.cost_usd = chunk.cost_usd

    def message(self) -> Message:
        calls = [
            ToolCall(id=p.id, name=p.name, arguments="".join(p.arguments) or "{}")
            for _, p in sorted(self.calls.items())
        ]
        return Message.assistant("".join(self.text) or None, tool_calls=calls or None)
