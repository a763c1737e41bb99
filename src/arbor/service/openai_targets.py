"""Agents and workflows answering as chat models (``agent:<name>``, ``workflow:<name>``).

Each target is prepared first (resolve the name, check the input, start the run), so every
refusal is raised while the HTTP status can still say so; then it either completes or streams
Arbor :class:`~arbor.llm.types.StreamChunk`\\ s, which the gateway encodes exactly as it encodes
a provider model's stream.

* ``agent:<name>``: the stored, enabled agent (its definition built as it is stored) answers
  the last user message, with the earlier turns as its memory. Its own instructions win over
  a client system message. The last user message may be a JSON object: its keys become the
  run's ``deps`` (a role agent takes the role's variables from there); plain text fills
  ``task`` (or a role's first required variable). Client tools are not given to agents.
* ``workflow:<name>``: starts a durable run through the run manager with the input taken from
  the last user message (a JSON object is the state input; plain text fills the state's
  ``task``, ``input`` or ``prompt`` field, whichever exists). A stream shows node progress
  lines as the run emits them, then the output; closing the stream does not stop the run.
  A run that pauses for approval says so and how to decide; a failed run says why. The
  reply's usage is the sum of the run's ``llm_call`` events.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from arbor.agents import Agent, AgentError, InstructionsError, RunFinished, TextDelta
from arbor.agents.definitions import AgentDefinition, RoleAgent
from arbor.agents.memory import Memory
from arbor.agents.supervision import Supervisor
from arbor.agents.workflow.checkpoints import RunEvent
from arbor.core.errors import InvalidRequestError, NotFoundError, WorkflowError
from arbor.core.ids import new_id
from arbor.llm.types import CallContext, ChatResponse, Message, StreamChunk, Usage
from arbor.service.context import ServiceContext
from arbor.store import RunRecord
from arbor.store.agents import AgentRepository

__all__ = ["AgentTarget", "WorkflowTarget", "parse_input"]

#: State fields that take a plain-text message, in order of preference.
TEXT_FIELDS = ("task", "input", "prompt")
#: Output fields shown as the answer of a finished run, in order of preference.
ANSWER_FIELDS = ("output", "answer", "result", "draft", "text", "content", "response")
_END_EVENTS = frozenset({"run_finished", "run_failed", "run_cancelled", "approval_requested"})


def parse_input(messages: list[Message]) -> tuple[str, dict[str, Any] | None]:
    """The last user message's text, and its value when it is a JSON object."""
    if not messages or messages[-1].role != "user":
        raise InvalidRequestError("the last message must be a user message")
    text = messages[-1].content or ""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError:
            return text, None
        if isinstance(value, dict):
            return text, value
    return text, None


def _history(messages: list[Message]) -> list[Message]:
    """Earlier turns as plain text: tool traffic belongs to the client's own tools, which
    an agent does not have."""
    out: list[Message] = []
    for m in messages[:-1]:
        if m.role == "tool" or (m.role == "assistant" and not m.content):
            continue
        role = "system" if m.role == "developer" else m.role
        out.append(Message(role=role, content=m.content or ""))
    return out


def _as_text(output: Any) -> str:
    if isinstance(output, BaseModel):
        return output.model_dump_json(indent=2)
    return output if isinstance(output, str) else json.dumps(output, indent=2, default=str)


class AgentTarget:
    """A stored agent as a chat model."""

    def __init__(
        self, ctx: ServiceContext, name: str, messages: list[Message], key_id: str | None
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.model_id = f"agent:{name}"
        self.messages = messages
        self.run_id = new_id("run")
        self.context = CallContext(key_id=key_id, agent_id=name, run_id=self.run_id)
        self._repo = AgentRepository(ctx.db)
        self._agent: Agent[Any] | None = None
        self._prompt = ""
        self._deps: dict[str, Any] = {}
        self._memory: Memory | None = None

    async def prepare(self) -> None:
        """Load and check the agent and the conversation (404/409/400 before any output)."""
        try:
            record = await Supervisor(self._repo).check_enabled(self.name)
        except NotFoundError:
            raise NotFoundError(f"model {self.model_id!r} not found: no such agent") from None
        agent = AgentDefinition.from_record(record).build()
        text, value = parse_input(self.messages)
        self._prompt = text
        if value is not None:
            self._deps = value
        elif isinstance(agent, RoleAgent):
            first = agent.role.required[0] if agent.role.required else "task"
            self._deps = {first: text}
        else:
            self._deps = {"task": text}
        memory = agent.new_memory(self.ctx.client)
        memory.extend(_history(self.messages))
        # Rendered here so that a variable the input lacks is a 400 naming it, before the
        # response starts.
        try:
            agent.render_instructions(self._deps, run_id=self.run_id)
        except InstructionsError as exc:
            takes = (
                f" (the role's variables: {', '.join(agent.role.variables)})"
                if isinstance(agent, RoleAgent)
                else ""
            )
            raise InvalidRequestError(
                f"{exc}: send the last user message as a JSON object with the variables the "
                f"agent's instructions use{takes}"
            ) from None
        self._agent, self._memory = agent, memory

    async def _failed(self) -> None:
        """The agent's own failures (bad instructions, invalid output, endless tool loop)
        count towards flap supervision; upstream trouble does not."""
        await Supervisor(self._repo).record_failure(self.name)

    async def complete(self) -> ChatResponse:
        agent, memory = self._agent, self._memory
        assert agent is not None and memory is not None, "prepare() first"
        try:
            result = await agent.run(
                self._prompt,
                client=self.ctx.client,
                deps=self._deps,
                memory=memory,
                context=self.context,
            )
        except AgentError:
            await self._failed()
            raise
        return ChatResponse(
            id=self.run_id,
            model=self.model_id,
            message=Message.assistant(_as_text(result.output)),
            finish_reason="stop",
            usage=result.usage,
            cost_usd=result.cost_usd,
        )

    async def stream(self) -> AsyncIterator[StreamChunk]:
        agent, memory = self._agent, self._memory
        assert agent is not None and memory is not None, "prepare() first"
        # Structured output is shown once it is valid, not as raw JSON tokens that a
        # re-ask may still replace.
        plain = agent.output_type is str
        events = agent.run_stream(
            self._prompt,
            client=self.ctx.client,
            deps=self._deps,
            memory=memory,
            context=self.context,
        )
        try:
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, TextDelta) and plain:
                        yield StreamChunk(id=self.run_id, content=event.text)
                    elif isinstance(event, RunFinished):
                        result = event.result
                        if not plain:
                            yield StreamChunk(id=self.run_id, content=_as_text(result.output))
                        yield StreamChunk(
                            id=self.run_id,
                            finish_reason="stop",
                            usage=result.usage,
                            cost_usd=result.cost_usd,
                        )
        except AgentError:
            await self._failed()
            raise


class WorkflowTarget:
    """A workflow as a chat model: each request starts one durable run."""

    def __init__(
        self, ctx: ServiceContext, name: str, messages: list[Message], key_id: str | None
    ) -> None:
        if ctx.runs is None:
            raise WorkflowError("this server runs no workflows (no run manager)")
        self.runs = ctx.runs
        self.name = name
        self.model_id = f"workflow:{name}"
        self.messages = messages
        self.key_id = key_id
        self.run_id = ""

    def _input(self) -> dict[str, Any]:
        try:
            state_type = self.runs.workflow(self.name).state_type
        except NotFoundError:
            raise NotFoundError(f"model {self.model_id!r} not found: no such workflow") from None
        text, value = parse_input(self.messages)
        if value is not None:
            return value
        fields = state_type.model_fields
        for name in TEXT_FIELDS:
            if name in fields:
                return {name: text}
        raise InvalidRequestError(
            f"workflow {self.name!r} takes no text input (its state has none of "
            f"{', '.join(TEXT_FIELDS)}): send the last user message as a JSON object with "
            f"the state's fields ({', '.join(fields)})"
        )

    async def prepare(self) -> None:
        """Start the run (its input checked against the workflow's state first)."""
        self.run_id = await self.runs.start(self.name, self._input(), key_id=self.key_id)

    async def complete(self) -> ChatResponse:
        record = await self.runs.wait(self.run_id)
        seen = await self._scan()
        return ChatResponse(
            id=self.run_id,
            model=self.model_id,
            message=Message.assistant(_outcome(record, seen)),
            finish_reason="stop",
            usage=seen.usage,
        )

    async def stream(self) -> AsyncIterator[StreamChunk]:
        rid = self.run_id
        yield StreamChunk(id=rid, content=f"Run `{rid}` of workflow `{self.name}` started.\n\n")
        seen = _Seen()
        events = self.runs.watch(rid, 0, follow=True)
        try:
            async for event in events:
                seen.add(event)
                line = _progress(event)
                if line:
                    yield StreamChunk(id=rid, content=line)
                if event.type in _END_EVENTS:
                    break
        finally:
            await _close(events)
        record = await self.runs.wait(rid)
        yield StreamChunk(id=rid, content="\n" + _outcome(record, seen))
        yield StreamChunk(id=rid, finish_reason="stop", usage=seen.usage)

    async def _scan(self) -> _Seen:
        """What the run's stored events say (model usage, a pending approval)."""
        seen = _Seen()
        events = self.runs.watch(self.run_id, 0, follow=False)
        try:
            async for event in events:
                seen.add(event)
        finally:
            await _close(events)
        return seen


@dataclass(slots=True)
class _Seen:
    """Totals over a run's events: the tokens of its ``llm_call`` events and the latest
    approval request."""

    usage: Usage = field(default_factory=Usage)
    approval: tuple[str, str] | None = None

    def add(self, event: RunEvent) -> None:
        data = event.data
        if event.type == "llm_call":
            self.usage = Usage(
                input_tokens=self.usage.input_tokens + _int(data.get("input_tokens")),
                output_tokens=self.usage.output_tokens + _int(data.get("output_tokens")),
            )
        elif event.type == "approval_requested":
            self.approval = (event.node or "?", str(data.get("prompt") or ""))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _outcome(record: RunRecord, seen: _Seen) -> str:
    rid = record.id
    if record.status == "succeeded":
        return _answer(record.output or {})
    if record.status == "waiting_approval":
        node, prompt = seen.approval or ("?", "")
        asked = f": {prompt}" if prompt else ""
        return (
            f"Run `{rid}` is waiting for approval at node `{node}`{asked}\n"
            f"Approve or reject it with `arbor runs approve {rid}` / "
            f"`arbor runs reject {rid}`, or POST /v1/runs/{rid}/approve or /reject."
        )
    if record.status == "failed":
        return f"Run `{rid}` failed: {record.error or 'unknown error'}"
    return f"Run `{rid}` is {record.status}."


async def _close(events: AsyncIterator[RunEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:  # an async generator: stop its follow-up wait now
        await aclose()


def _progress(event: RunEvent) -> str:
    if event.type == "node_started":
        visit = event.data.get("visit")
        again = f" (visit {visit})" if isinstance(visit, int) and visit > 1 else ""
        return f"- `{event.node}` started{again}\n"
    if event.type == "node_finished":
        changed = event.data.get("changed")
        what = f": {', '.join(map(str, changed))}" if changed else ""
        return f"- `{event.node}` finished{what}\n"
    if event.type == "run_resumed":
        return "- run resumed\n"
    data = event.data
    if event.type == "llm_call":
        who = data.get("agent") or event.node or "a node"
        tokens = _int(data.get("input_tokens")) + _int(data.get("output_tokens"))
        return f"  - `{who}` asked `{data.get('model')}` ({tokens} tokens)\n"
    if event.type == "tool_call":
        failed = "" if data.get("ok") else f" (failed: {data.get('error')})"
        return f"  - `{data.get('agent')}` called `{data.get('tool')}`{failed}\n"
    if event.type == "approval_decided":
        verdict = "approved" if data.get("approved") else "rejected"
        return f"- `{event.node}` {verdict}\n"
    return ""


def _answer(output: Mapping[str, Any]) -> str:
    """The run's answer: its main text field when it has one, else the whole state."""
    state = {k: v for k, v in output.items() if not k.startswith("__")}
    for name in ANSWER_FIELDS:
        value = state.get(name)
        if isinstance(value, str) and value:
            return value
    return "```json\n" + json.dumps(state, indent=2, default=str) + "\n```"
