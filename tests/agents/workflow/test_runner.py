"""The workflow runner over the in-memory checkpoint store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from arbor.agents.workflow import (
    END,
    InMemoryCheckpointStore,
    NodeContext,
    Workflow,
    WorkflowRunner,
)
from arbor.core.config import Settings
from arbor.core.errors import WorkflowError
from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest, Message
from arbor.testing import FunctionModel


class Draft(BaseModel):
    task: str
    code: str = ""
    confidence: float = 0.0
    iterations: int = 0
    reviews: list[str] = []
    approved: bool | None = None
    tests: str = ""
    docs: str = ""
    report: str = ""


def refine_loop(max_iterations: int = 5) -> Workflow[Draft]:
    wf = Workflow("refine", Draft)

    @wf.node()
    async def code(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        return {"code": f"v{state.iterations + 1}", "iterations": state.iterations + 1}

    @wf.node(max_visits=max_iterations)
    async def review(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        return {"confidence": min(1.0, state.iterations * 0.3)}

    @wf.node()
    async def done(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        return {"report": f"{state.code} at {state.confidence:.1f}"}

    wf.edge("code", "review")
    wf.route("review", lambda s: "done" if s.confidence >= 0.85 else "code", ["done", "code"])
    wf.edge("done", END)
    return wf


async def test_adaptive_loop_refines_until_confident() -> None:
    store = InMemoryCheckpointStore()
    result = await WorkflowRunner(refine_loop(), store).start({"task": "t"})
    assert result.status == "succeeded"
    assert result.state.iterations == 3 and result.state.report == "v3 at 0.9"
    # one checkpoint per node run: (code, review) x 3 + done
    assert store.delta_count(result.run_id) == 7
    types = [e.type for e in await store.events(result.run_id)]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("node_finished") == 7


def refine_until_loop(step: float, cap: int) -> Workflow[Draft]:
    wf = Workflow("refine-until", Draft)

    @wf.node()
    async def code(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        return {"code": f"v{state.iterations + 1}", "iterations": state.iterations + 1}

    @wf.node()
    async def validate(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        return {"confidence": min(1.0, state.iterations * step)}

    @wf.node()
    async def done(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        return {"report": f"{state.code} at {state.confidence:.1f}"}

    wf.edge("code", "validate")
    wf.refine_until(
        "validate", lambda s: s.confidence >= 0.85, refine="code", then="done", max_iterations=cap
    )
    wf.edge("done", END)
    return wf


@pytest.mark.parametrize(
    ("step", "cap", "iterations", "report"),
    [
        (0.3, 5, 3, "v3 at 0.9"),  # confident on the third pass
        (0.1, 4, 4, "v4 at 0.4"),  # never confident: ends at the cap, run still succeeds
        (0.9, 1, 1, "v1 at 0.9"),
    ],
)
async def test_refine_until_is_an_adaptive_loop_with_a_cap(
    step: float, cap: int, iterations: int, report: str
) -> None:
    store = InMemoryCheckpointStore()
    result = await WorkflowRunner(refine_until_loop(step, cap), store).start({"task": "t"})
    assert result.status == "succeeded"
    assert result.state.iterations == iterations and result.state.report == report
    assert store.delta_count(result.run_id) == 2 * iterations + 1


def test_refine_until_refuses_a_cap_below_one() -> None:
    wf = Workflow("bad", Draft)
    with pytest.raises(WorkflowError, match="max_iterations"):
        wf.refine_until("a", lambda s: True, refine="a", then="b", max_iterations=0)


async def test_loop_cap_fails_the_run_clearly() -> None:
    result = await WorkflowRunner(refine_loop(max_iterations=2), InMemoryCheckpointStore()).start(
        {"task": "t"}
    )
    assert result.status == "failed"
    assert result.error is not None and "max_visits=2" in result.error


async def test_fan_out_runs_branches_concurrently_then_joins() -> None:
    wf = Workflow("team", Draft)
    running = 0
    peak = 0

    async def branch(key: str) -> dict[str, Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return {key: "written"}

    async def dev(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        return {"code": "app.py"}

    async def qa(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        return await branch("tests")

    async def writer(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        return await branch("docs")

    async def report(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        return {"report": f"{state.code}+{state.tests}+{state.docs}"}

    for name, fn in [("dev", dev), ("qa", qa), ("writer", writer), ("report", report)]:
        wf.add_node(name, fn)
    wf.fan_out("dev", ["qa", "writer"], join="report")
    wf.edge("report", END)
    result = await WorkflowRunner(wf, InMemoryCheckpointStore()).start({"task": "t"})
    assert result.status == "succeeded", result.error
    assert result.state.report == "app.py+written+written"
    assert peak == 2


async def test_approval_pauses_until_decided() -> None:
    wf = Workflow("gated", Draft)

    async def deploy(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        return {"report": "deployed" if state.approved else "skipped"}

    wf.add_approval("approve", prompt="Deploy to production?")
    wf.add_node("deploy", deploy)
    wf.edge("approve", "deploy")
    wf.edge("deploy", END)
    store = InMemoryCheckpointStore()
    runner = WorkflowRunner(wf, store)
    first = await runner.start({"task": "t"})
    assert first.status == "waiting_approval"
    assert (await store.load(first.run_id)).status == "waiting_approval"
    again = await runner.resume(first.run_id)  # still undecided: still waiting
    assert again.status == "waiting_approval"
    await store.decide_approval(first.run_id, "approve", True, "looks good", by="alice")
    final = await runner.resume(first.run_id)
    assert final.status == "succeeded" and final.state.report == "deployed"


async def test_resume_does_not_repeat_completed_llm_calls() -> None:
    calls: list[str] = []

    def reply(request: ChatRequest) -> str:
        calls.append(request.messages[-1].content or "")
        return f"answer {len(calls)}"

    client = LLMClient(
        Settings(llm={"cache": {"enabled": False}}), models={"test:a": FunctionModel(reply)}
    )
    crash = True

    wf = Workflow("two_calls", Draft)

    async def think(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        first = await ctx.complete(ChatRequest(model="test:a", messages=[Message.user("one")]))
        if crash:
            raise KeyboardInterrupt  # the process dies after the first call completed
        second = await ctx.complete(ChatRequest(model="test:a", messages=[Message.user("two")]))
        return {"code": f"{first.text}|{second.text}"}

    wf.add_node("think", think)
    wf.edge("think", END)
    store = InMemoryCheckpointStore()
    runner = WorkflowRunner(wf, store, client=client)
    run_id = await store.create_run("two_calls", {"task": "t"})
    with pytest.raises(KeyboardInterrupt):
        await runner.resume(run_id)
    crash = False
    result = await runner.resume(run_id)
    assert result.state.code == "answer 1|answer 2"
    assert calls == ["one", "two"]  # "one" was not asked again
    await client.aclose()


async def test_node_errors_and_bad_deltas_fail_the_run_with_a_message() -> None:
    wf = Workflow("bad", Draft)

    async def oops(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        return {"nonexistent": 1}

    wf.add_node("oops", oops)
    wf.edge("oops", END)
    result = await WorkflowRunner(wf, InMemoryCheckpointStore()).start({"task": "t"})
    assert result.status == "failed" and "nonexistent" in (result.error or "")


def test_invalid_graphs_are_refused() -> None:
    wf = Workflow("broken", Draft)

    async def a(state: Draft, ctx: NodeContext) -> None:
        return None

    wf.add_node("a", a)
    with pytest.raises(WorkflowError, match="no outgoing edge"):
        WorkflowRunner(wf, InMemoryCheckpointStore())
    wf.edge("a", "missing")
    with pytest.raises(WorkflowError, match="unknown 'missing'"):
        WorkflowRunner(wf, InMemoryCheckpointStore())
