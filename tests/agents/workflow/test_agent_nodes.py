"""Agents inside workflow nodes (``ctx.run_agent``): exactly-once LLM and tool calls across a
crash and a resume with a fresh runner, llm_call/tool_call events, plugins, supervision."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from arbor.agents import Agent, AgentDisabledError, Plugin, Supervisor, ToolContext, tool
from arbor.agents.plugins import HookContext
from arbor.agents.tools import ToolResult
from arbor.agents.workflow import END, NodeContext, Workflow, WorkflowRunner
from arbor.agents.workflow.sql import SQLCheckpointStore
from arbor.core.config import Settings
from arbor.core.errors import ProviderError
from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest, ToolCall
from arbor.store import AgentRepository, Database
from arbor.testing import ScriptedModel


class Crash(BaseException):
    """Stands in for the process dying (not an Exception: nothing may catch it)."""


class Job(BaseModel):
    task: str = "ship"
    answer: str = ""
    after: str = ""


def _client(model: ScriptedModel) -> LLMClient:
    return LLMClient(Settings(llm={"cache": {"enabled": False}}), models={"test:a": model})


def _workflow(agent: Agent[str], crash_at: set[str]) -> Workflow[Job]:
    wf = Workflow("ops", Job)

    async def work(state: Job, ctx: NodeContext) -> dict[str, Any]:
        result = await ctx.run_agent(agent, f"please {state.task}")
        if "work" in crash_at:
            crash_at.discard("work")
            raise Crash  # after the tool ran and the agent finished; before the checkpoint
        return {"answer": result.output}

    async def wrap(state: Job, ctx: NodeContext) -> dict[str, Any]:
        return {"after": state.answer.upper()}

    wf.add_node("work", work)
    wf.add_node("wrap", wrap)
    wf.edge("work", "wrap")
    wf.edge("wrap", END)
    return wf


async def test_crash_after_tool_then_resume_repeats_no_call(db: Database) -> None:
    deployed: list[str] = []

    @tool
    def deploy(target: str, ctx: ToolContext) -> str:
        """Deploy to a target (a side effect)."""
        deployed.append(f"{target}@{ctx.idempotency_key}")
        return f"deployed {target}"

    call = ToolCall(id="c1", name="deploy", arguments='{"target": "prod"}')
    model = ScriptedModel([[call], "done"])
    agent = Agent("deployer", "Deploy what is asked.", model="test:a", tools=[deploy])
    crash_at = {"work"}
    async with _client(model) as client:
        store = SQLCheckpointStore(db)
        run_id = await store.create_run("ops", Job().model_dump())
        with pytest.raises(Crash):
            await WorkflowRunner(_workflow(agent, crash_at), store, client=client).resume(run_id)
        assert len(deployed) == 1 and len(model.calls) == 2
        fresh = WorkflowRunner(_workflow(agent, crash_at), SQLCheckpointStore(db), client=client)
        result = await fresh.resume(run_id)
    assert result.status == "succeeded", result.error
    assert (result.state.answer, result.state.after) == ("done", "DONE")
    assert len(deployed) == 1  # the side effect happened once
    assert deployed[0].startswith(f"prod@{run_id}:work#1:agent:deployer#0:tool:0:0:c1")
    assert len(model.calls) == 2  # one model call per step, none repeated
    events = await store.events(run_id)
    assert [e.type for e in events].count("llm_call") == 2
    [tool_event] = [e for e in events if e.type == "tool_call"]
    assert tool_event.node == "work"
    assert tool_event.data["tool"] == "deploy" and tool_event.data["ok"] is True
    llm = next(e for e in events if e.type == "llm_call")
    assert llm.data["agent"] == "deployer" and llm.data["input_tokens"] > 0


async def test_crash_between_agent_steps_resumes_mid_conversation(db: Database) -> None:
    calls: list[int] = []

    @tool
    async def charge(amount: int) -> str:
        """Charge a card."""
        calls.append(amount)
        return "charged"

    class Stop(Plugin):
        """Dies right after the first tool result comes back (mid-agent)."""

        armed = True

        async def after_tool_call(
            self, ctx: HookContext, call: ToolCall, result: ToolResult
        ) -> ToolResult:
            if self.armed:
                self.armed = False
                raise Crash
            return result

    model = ScriptedModel([[ToolCall(id="t1", name="charge", arguments='{"amount": 5}')], "paid"])
    agent = Agent("cashier", "Charge.", model="test:a", tools=[charge])
    async with _client(model) as client:
        store = SQLCheckpointStore(db)
        stop = Stop()
        run_id = await store.create_run("ops", Job().model_dump())
        first = WorkflowRunner(_workflow(agent, set()), store, client=client, plugins=[stop])
        with pytest.raises(Crash):
            await first.resume(run_id)
        assert calls == [5] and len(model.calls) == 1
        result = await WorkflowRunner(
            _workflow(agent, set()), SQLCheckpointStore(db), client=client, plugins=[stop]
        ).resume(run_id)
    assert result.status == "succeeded" and result.state.answer == "paid"
    assert calls == [5] and len(model.calls) == 2


async def test_plugins_hook_the_calls_of_agents_in_nodes() -> None:
    from arbor.agents.workflow import InMemoryCheckpointStore

    seen: list[str] = []

    class Audit(Plugin):
        async def before_llm_call(self, ctx: HookContext, request: ChatRequest) -> ChatRequest:
            seen.append(f"llm {ctx.agent} {ctx.node}#{ctx.visit}")
            return request.model_copy(update={"temperature": 0.0})

        async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> ToolCall:
            seen.append(f"tool {call.name}")
            return call

    @tool
    def look() -> str:
        """Look around."""
        return "a cat"

    model = ScriptedModel([[ToolCall(id="x", name="look")], "a cat it is"])
    agent = Agent("eyes", "See.", model="test:a", tools=[look])
    async with _client(model) as client:
        runner = WorkflowRunner(
            _workflow(agent, set()), InMemoryCheckpointStore(), client=client, plugins=[Audit()]
        )
        result = await runner.start({})
    assert result.status == "succeeded"
    assert seen == ["llm eyes work#1", "tool look", "llm eyes work#1"]
    assert all(r.temperature == 0.0 for r in model.calls)


async def test_flapping_agent_is_disabled_and_then_refused(db: Database) -> None:
    repo = AgentRepository(db)
    await repo.create("flaky", {"instructions": "Answer."})
    supervisor = Supervisor(repo, threshold=2, window=timedelta(minutes=5))
    down = ProviderError("upstream down", provider="test")
    model = ScriptedModel([down, down])
    agent = Agent("flaky", "Answer.", model="test:a", max_steps=1)
    async with _client(model) as client:
        store = SQLCheckpointStore(db)
        wf = _workflow(agent, set())
        runner = WorkflowRunner(wf, store, client=client, supervisor=supervisor)
        first = await runner.start({})
        assert first.status == "failed" and "upstream down" in (first.error or "")
        assert (await repo.get_by_name("flaky")).status == "enabled"
        second = await runner.start({})
        assert second.status == "failed"
        assert "now disabled_flapping" in (second.error or "")
        assert (await repo.get_by_name("flaky")).status == "disabled_flapping"
        third = await runner.start({})  # refused before any model call
    assert third.status == "failed"
    assert third.error is not None and third.error.startswith("agent_disabled:")
    assert "arbor agents enable flaky" in third.error
    assert len(model.calls) == 2


async def test_disabled_agent_fails_the_node_and_unstored_agents_run(db: Database) -> None:
    repo = AgentRepository(db)
    record = await repo.create("off", {"instructions": "x"})
    await repo.set_status(record.id, "disabled")
    supervisor = Supervisor(repo)
    model = ScriptedModel(["fine"])
    async with _client(model) as client:
        store = SQLCheckpointStore(db)
        off = Agent("off", "x", model="test:a")
        failed = await WorkflowRunner(
            _workflow(off, set()), store, client=client, supervisor=supervisor
        ).start({})
        assert failed.status == "failed" and "agent 'off' is disabled" in (failed.error or "")
        free = Agent("not-stored", "x", model="test:a")
        ok = await WorkflowRunner(
            _workflow(free, set()), store, client=client, supervisor=supervisor
        ).start({})
    assert ok.status == "succeeded" and ok.state.answer == "fine"
    with pytest.raises(AgentDisabledError):
        await supervisor.build_agent("off")
