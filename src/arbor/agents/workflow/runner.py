"""Runs a :class:`~arbor.agents.workflow.graph.Workflow` durably.

The scheduler's position (nodes to run next, fan-outs waiting for their branches, visit
counts, steps) travels inside each checkpoint's delta under ``__scheduler__``, so folding the
deltas of a run gives both its state and where to continue. After a crash, ``resume`` runs the
nodes that had not checkpointed; their completed LLM calls and side effects come back from the
idempotency records instead of being repeated.

A node's update (a partial update model, the state, or a mapping: see
:mod:`arbor.agents.workflow.graph`) becomes a delta of field → value; ``after_node`` plugins
see that delta, and the checkpoint stores the fields it names as JSON.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from pydantic import BaseModel, ValidationError

from arbor.agents import _loop
from arbor.agents.hooks import CallPlugin, HookContext
from arbor.agents.memory import Memory
from arbor.agents.plugins import NO_HOOKS, Hooks, Plugin
from arbor.agents.results import AgentResult
from arbor.agents.spec import AgentSpec
from arbor.agents.workflow._durable import NodeJournal, llm_call_event
from arbor.agents.workflow._updates import to_delta
from arbor.agents.workflow.checkpoints import CheckpointStore, RunEvent
from arbor.agents.workflow.context import NodeContext
from arbor.agents.workflow.graph import END, Workflow
from arbor.core.errors import ArborError, WorkflowError
from arbor.llm.client import LLMClient
from arbor.llm.types import CallContext, ChatRequest, ChatResponse

if TYPE_CHECKING:
    from arbor.agents.supervision import Supervisor

__all__ = ["NodePlugin", "RunResult", "WorkflowRunner"]

StateT = TypeVar("StateT", bound=BaseModel)
T = TypeVar("T")
OutputT = TypeVar("OutputT")
SCHED = "__scheduler__"


class NodePlugin(Protocol):
    """Node hooks only: what a node-level plugin (e.g. the CLI's live view) implements.
    :class:`~arbor.agents.plugins.Plugin` has these and the LLM and tool call hooks."""

    async def before_node(self, ctx: NodeContext, state: BaseModel) -> None: ...

    async def after_node(
        self, ctx: NodeContext, state: BaseModel, delta: dict[str, Any]
    ) -> dict[str, Any]: ...


@dataclass(slots=True)
class _NodeVisit:
    """The runner's :class:`~arbor.agents.workflow.context.NodeContext`: one per node visit,
    with the run's store, client, resolved plugin hooks and supervisor."""

    run_id: str
    node: str
    visit: int
    store: CheckpointStore
    client: LLMClient | None
    hooks: Hooks = NO_HOOKS
    supervisor: Supervisor | None = None
    _calls: itertools.count[int] = field(default_factory=itertools.count)
    _agents: itertools.count[int] = field(default_factory=itertools.count)

    def key(self, name: str) -> str:
        """An idempotency key unique to this node visit."""
        return f"{self.node}#{self.visit}:{name}"

    async def once(self, name: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` once per node visit, even across a crash and resume: a result already
        recorded under ``name`` is returned instead (it must be JSON-serialisable)."""
        key = self.key(name)
        found, value = await self.store.get_idempotent(self.run_id, key)
        if found:
            return value  # type: ignore[no-any-return]
        result = await fn()
        await self.store.record_idempotent(self.run_id, key, result)
        return result

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """An LLM call that happens exactly once for this node visit (the n-th call of the
        visit replays the n-th recorded response after a resume)."""
        client = self._client()
        ctx = request.context.model_copy(update={"run_id": self.run_id})
        where = HookContext(None, self.run_id, self.node, self.visit)
        req = await self.hooks.before_llm_call(where, request.model_copy(update={"context": ctx}))
        name = f"llm:{next(self._calls)}"

        async def call() -> dict[str, Any]:
            response = await client.complete(req)
            await self.emit(llm_call_event(self.node, None, response))
            return response.model_dump(mode="json")

        response = ChatResponse.model_validate(await self.once(name, call))
        return await self.hooks.after_llm_call(where, req, response)

    async def run_agent(
        self,
        agent: AgentSpec[OutputT],
        prompt: str,
        *,
        deps: Any = None,
        memory: Memory | None = None,
        plugins: Sequence[CallPlugin] = (),
    ) -> AgentResult[OutputT]:
        """Run ``agent`` durably: each of its LLM and tool calls happens once across crash
        and resume (see :mod:`arbor.agents.workflow._durable`), hooked by the runner's
        plugins and ``plugins``. With a supervisor, an agent stored under its name must be
        enabled, and its failures are counted (flapping disables it)."""
        client = self._client()
        journal = NodeJournal(self, agent.name, next(self._agents))
        hooks = self.hooks.plus(plugins)
        context = CallContext(run_id=self.run_id, agent_id=agent.name)

        async def go() -> AgentResult[OutputT]:
            result = await _loop.run(
                agent, prompt, client, deps, memory, context, hooks=hooks, journal=journal
            )
            return cast(AgentResult[OutputT], result)

        if self.supervisor is None:
            return await go()
        return await self.supervisor.supervise(agent.name, go)

    async def emit(self, event: RunEvent) -> None:
        """Append an event of this node (live: watchers see it at once)."""
        if event.node is None:
            event.node = self.node
        await self.store.append_event(self.run_id, event)

    def _client(self) -> LLMClient:
        if self.client is None:
            raise WorkflowError("this runner has no LLM client", run_id=self.run_id)
        return self.client


@dataclass(slots=True)
class RunResult(Generic[StateT]):
    run_id: str
    status: str
    state: StateT
    error: str | None = None


@dataclass
class _Scheduler:
    frontier: list[str]
    waiting: dict[str, list[str]] = field(default_factory=dict)
    visits: dict[str, int] = field(default_factory=dict)
    steps: int = 0

    def dump(self) -> dict[str, Any]:
        return {
            "frontier": list(self.frontier),
            "waiting": {k: list(v) for k, v in self.waiting.items()},
            "visits": dict(self.visits),
            "steps": self.steps,
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> _Scheduler:
        return cls(
            frontier=list(data["frontier"]),
            waiting={k: list(v) for k, v in data["waiting"].items()},
            visits=dict(data["visits"]),
            steps=int(data["steps"]),
        )


class _Paused(Exception):
    """An approval node is waiting for a decision."""


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


class WorkflowRunner(Generic[StateT]):
    def __init__(
        self,
        workflow: Workflow[StateT],
        store: CheckpointStore,
        *,
        client: LLMClient | None = None,
        plugins: Sequence[Plugin | NodePlugin] = (),
        supervisor: Supervisor | None = None,
    ) -> None:
        """``plugins`` hook every node, and the LLM and tool calls of the node's agents and
        ``ctx.complete``; ``supervisor`` guards agents run with ``ctx.run_agent``."""
        workflow.validate()
        self.workflow = workflow
        self.store = store
        self.client = client
        self.plugins = list(plugins)
        self.hooks = Hooks(self.plugins)
        self.supervisor = supervisor
        self._lock = asyncio.Lock()

    async def start(self, input: StateT | Mapping[str, Any]) -> RunResult[StateT]:
        state = (
            input
            if isinstance(input, self.workflow.state_type)
            else self._validate(dict(input), "")
        )
        run_id = await self.store.create_run(self.workflow.name, state.model_dump(mode="json"))
        return await self.resume(run_id)

    async def resume(self, run_id: str) -> RunResult[StateT]:
        """Continue a run from its last checkpoint (also how a fresh run starts)."""
        stored = await self.store.load(run_id)
        if stored.workflow != self.workflow.name:
            raise WorkflowError(
                f"run {run_id} belongs to workflow {stored.workflow!r}, not {self.workflow.name!r}",
                run_id=run_id,
            )
        data = dict(stored.state)
        sched_data = data.pop(SCHED, None)
        state = self._validate(data, run_id)
        if stored.status in ("succeeded", "failed", "cancelled"):
            return RunResult(run_id, stored.status, state, stored.error)
        assert self.workflow.entry is not None
        sched = _Scheduler.load(sched_data) if sched_data else _Scheduler([self.workflow.entry])
        await self.store.set_status(run_id, "running")
        await self.store.append_event(
            run_id, RunEvent("run_resumed" if sched_data else "run_started")
        )
        try:
            while sched.frontier:
                state = await self._wave(run_id, state, sched)
        except _Paused:
            return RunResult(run_id, "waiting_approval", state)
        except ArborError as exc:
            return await self._fail(run_id, state, exc)
        # The terminal event goes first: a watcher that sees the final status has it stored.
        await self.store.append_event(run_id, RunEvent("run_finished", data={"status": "ok"}))
        await self.store.set_status(run_id, "succeeded", output=state.model_dump(mode="json"))
        return RunResult(run_id, "succeeded", state)

    async def _fail(self, run_id: str, state: StateT, exc: ArborError) -> RunResult[StateT]:
        message = f"{exc.kind}: {exc}"
        await self.store.append_event(run_id, RunEvent("run_failed", data={"error": message}))
        await self.store.set_status(run_id, "failed", error=message)
        return RunResult(run_id, "failed", state, message)

    async def _wave(self, run_id: str, state: StateT, sched: _Scheduler) -> StateT:
        """Run every node on the frontier concurrently (parallel branches), checkpointing
        each as it finishes; the next wave is what they lead to."""
        wave = list(dict.fromkeys(sched.frontier))
        snapshot = state

        async def one(node: str) -> None:
            nonlocal state
            delta = await self._run_node(run_id, node, snapshot, sched)
            async with self._lock:  # merge and checkpoint one node at a time
                state = self._apply(state, delta, run_id, node)
                self._advance(node, state, sched)
                changed = state.model_dump(mode="json", include=set(delta)) if delta else {}
                await self.store.checkpoint(
                    run_id,
                    node,
                    {**changed, SCHED: sched.dump()},
                    [RunEvent("node_finished", node, {"changed": sorted(delta)})],
                )

        if len(wave) == 1:
            await one(wave[0])
            return state
        try:
            async with asyncio.TaskGroup() as tg:
                for node in wave:
                    tg.create_task(one(node))
        except BaseExceptionGroup as group:  # surface one cause; a failure beats a pause
            causes = list(_leaves(group))
            raise next((c for c in causes if not isinstance(c, _Paused)), causes[0]) from None
        return state

    async def _run_node(
        self, run_id: str, node: str, state: StateT, sched: _Scheduler
    ) -> dict[str, Any]:
        spec = self.workflow.nodes[node]
        visit = sched.visits.get(node, 0) + 1
        if spec.max_visits is not None and visit > spec.max_visits:
            raise WorkflowError(
                f"node {node!r} would run a {visit}th time (max_visits={spec.max_visits})",
                run_id=run_id,
            )
        if sched.steps + 1 > self.workflow.max_steps:
            raise WorkflowError(f"run exceeded max_steps={self.workflow.max_steps}", run_id=run_id)
        ctx = _NodeVisit(run_id, node, visit, self.store, self.client, self.hooks, self.supervisor)
        if spec.kind == "approval":
            return await self._approval(ctx, spec.prompt)
        await self.store.append_event(run_id, RunEvent("node_started", node, {"visit": visit}))
        if self.hooks.has("before_node"):
            await self.hooks.before_node(ctx, state)
        assert spec.fn is not None
        try:
            update = await spec.fn(state, ctx)
        except ArborError:
            raise
        except Exception as exc:  # a node's own bug: fail the run with its message
            raise WorkflowError(
                f"node {node!r} raised {type(exc).__name__}: {exc}", run_id=run_id
            ) from exc
        delta = to_delta(node, update, state, self.workflow.state_type, run_id=run_id)
        if self.hooks.has("after_node"):
            delta = await self.hooks.after_node(ctx, state, delta)
        return delta

    async def _approval(self, ctx: _NodeVisit, prompt: str) -> dict[str, Any]:
        decision = await self.store.approval(ctx.run_id, ctx.node, ctx.visit)
        if decision is None:
            await self.store.request_approval(ctx.run_id, ctx.node, ctx.visit)
            await self.store.set_status(ctx.run_id, "waiting_approval")
            data = {"prompt": prompt, "visit": ctx.visit}
            await ctx.emit(RunEvent("approval_requested", ctx.node, data))
            raise _Paused()
        approved, reason = decision
        data = {"approved": approved, "reason": reason, "visit": ctx.visit}
        await ctx.emit(RunEvent("approval_decided", ctx.node, data))
        fields = self.workflow.state_type.model_fields
        delta: dict[str, Any] = {}
        if "approved" in fields:
            delta["approved"] = approved
        if "approval_reason" in fields:
            delta["approval_reason"] = reason
        return delta

    def _advance(self, node: str, state: StateT, sched: _Scheduler) -> None:
        sched.frontier.remove(node)
        sched.visits[node] = sched.visits.get(node, 0) + 1
        sched.steps += 1
        for join, branches in list(sched.waiting.items()):
            if node in branches:
                branches.remove(node)
                if not branches:
                    del sched.waiting[join]
                    sched.frontier.append(join)
                return
        fan = self.workflow.join_of(node)
        if fan is not None:
            join, targets = fan
            sched.waiting[join] = list(targets)
            sched.frontier.extend(targets)
            return
        nxt = self.workflow.successors(node, state, sched.visits)
        sched.frontier.extend(n for n in nxt if n != END)

    def _apply(self, state: StateT, delta: dict[str, Any], run_id: str, node: str) -> StateT:
        if not delta:
            return state
        unknown = set(delta) - set(self.workflow.state_type.model_fields)
        if unknown:
            raise WorkflowError(
                f"node {node!r} returned keys not in the state: {sorted(unknown)}", run_id=run_id
            )
        # Unchanged fields are already valid: hand pydantic the existing values (no dump).
        merged = {**state.__dict__, **delta}
        return self._validate(merged, run_id, node)

    def _validate(self, data: dict[str, Any], run_id: str, node: str = "") -> StateT:
        try:
            return self.workflow.state_type.model_validate(data)
        except ValidationError as exc:
            where = f"after node {node!r}" if node else "input"
            raise WorkflowError(f"invalid workflow state {where}: {exc}", run_id=run_id) from exc
