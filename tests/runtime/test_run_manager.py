"""RunManager: background runs it owns, cancel, approvals, crash resume and shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from _workflows import SlowState, gate, review_reply, slow
from arbor.agents.workflow import END, NodeContext, Workflow
from arbor.agents.workflow.sql import SQLCheckpointStore
from arbor.cli.run import OPTIONS_EVENT as CLI_OPTIONS_EVENT
from arbor.core.config import Settings
from arbor.core.errors import NotFoundError, WorkflowError
from arbor.llm.client import LLMClient
from arbor.llm.types import ChatRequest
from arbor.runtime.runs import OPTIONS_EVENT, RunConflictError, RunInputError, RunManager
from arbor.store import Database, RunRepository
from arbor.testing import FunctionModel

SETTINGS = Settings(llm={"cache": {"enabled": False}})


@pytest.fixture
def database(db: Database) -> Database:
    """A migrated database: SQLite, and PostgreSQL (marked ``postgres``)."""
    return db


@pytest.fixture
def model() -> FunctionModel:
    return FunctionModel(review_reply)


@pytest.fixture
async def client(model: FunctionModel) -> AsyncIterator[LLMClient]:
    async with LLMClient(SETTINGS, models={"test:a": model}) as llm:
        yield llm


@pytest.fixture
async def manager(database: Database, client: LLMClient) -> AsyncIterator[RunManager]:
    runs = RunManager(SQLCheckpointStore(database), client, workflows={"gate": gate})
    try:
        yield runs
    finally:
        await runs.aclose()


async def _events(manager: RunManager, run_id: str) -> list[str]:
    return [e.type for e in await manager.store.events(run_id)]


async def test_review_loop_runs_in_the_background_with_the_keys_calls(
    manager: RunManager, model: FunctionModel
) -> None:
    run_id = await manager.start(
        "review-loop", {"task": "Write add(a, b)."}, model="test:a", key_id="key_1"
    )
    run = await manager.wait(run_id, timeout=30)
    assert run.status == "succeeded", run.error
    assert run.output is not None and run.output["verdict"] == "approve"
    assert len(model.calls) == 2
    assert {(c.context.key_id, c.context.run_id) for c in model.calls} == {("key_1", run_id)}
    types = await _events(manager, run_id)
    assert types[0] == OPTIONS_EVENT and types[1] == "run_started"
    assert types[-1] == "run_finished"
    assert not manager.active(run_id)  # the finished task was forgotten
    assert (await manager.options(run_id)).model == "test:a"


async def test_bad_requests_store_nothing(manager: RunManager, database: Database) -> None:
    with pytest.raises(RunInputError, match=r"'nope'.*gate, renode, review-loop, team"):
        await manager.start("nope", {})
    with pytest.raises(RunInputError, match="task: Field required") as info:
        await manager.start("review-loop", {"max_iterations": 2})
    assert info.value.field == "input"
    with pytest.raises(RunInputError, match="provider:model"):
        await manager.start("review-loop", {"task": "t"}, model="gpt-4o")
    assert (await RunRepository(database).list()).runs == []


async def test_approve_resumes_the_run_and_records_the_decider(manager: RunManager) -> None:
    run_id = await manager.start("gate", {"task": "t"})
    run = await manager.wait(run_id, timeout=30)
    assert run.status == "waiting_approval"
    assert "approval_requested" in await _events(manager, run_id)
    node = await manager.decide(run_id, True, "looks good", by="key:alice")
    assert node == "sign_off"
    run = await manager.wait(run_id, timeout=30)
    assert run.status == "succeeded", run.error
    assert run.output is not None and run.output["result"] == "shipped (looks good)"
    (approval,) = await manager.store.approvals.list(run_id=run_id)
    assert (approval.status, approval.decided_by, approval.reason) == (
        "approved",
        "key:alice",
        "looks good",
    )
    with pytest.raises(RunConflictError, match="no pending approval"):
        await manager.decide(run_id, True, "again", by="key:alice")


async def test_reject_takes_the_other_branch(manager: RunManager) -> None:
    run_id = await manager.start("gate", {"task": "t"})
    await manager.wait(run_id, timeout=30)
    await manager.decide(run_id, False, "too risky", by="key:bob")
    run = await manager.wait(run_id, timeout=30)
    assert run.status == "succeeded"
    assert run.output is not None and run.output["result"] == "dropped (too risky)"


async def test_cancel_stops_a_running_run(database: Database) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    manager = RunManager(
        SQLCheckpointStore(database), None, workflows={"slow": lambda m: slow(started, release)}
    )
    try:
        run_id = await manager.start("slow", {"task": "t"})
        await asyncio.wait_for(started.wait(), 30)
        assert manager.active(run_id)
        record = await manager.cancel(run_id)
        assert record.status == "cancelled" and record.finished_at is not None
        assert not manager.active(run_id)
        types = await _events(manager, run_id)
        assert types[-1] == "run_cancelled"
        assert "run_finished" not in types
        with pytest.raises(RunConflictError, match="already cancelled"):
            await manager.cancel(run_id)
        with pytest.raises(NotFoundError):
            await manager.cancel("run_missing")
    finally:
        await manager.aclose()


async def test_cancel_a_run_waiting_for_approval(manager: RunManager) -> None:
    run_id = await manager.start("gate", {"task": "t"})
    await manager.wait(run_id, timeout=30)
    assert (await manager.cancel(run_id)).status == "cancelled"
    with pytest.raises(RunConflictError):
        await manager.decide(run_id, True, "late", by="key:alice")


async def test_an_escaping_exception_is_logged_and_fails_the_run(manager: RunManager) -> None:
    def broken(model: str | None) -> Workflow[SlowState]:
        wf = Workflow("broken", SlowState)

        async def step(state: SlowState, ctx: NodeContext) -> dict[str, Any]:
            return {"steps": ["step"]}

        def router(state: SlowState) -> str:
            raise KeyError("no route to postgresql://arbor:hunter2@db/arbor")

        wf.add_node("step", step)
        wf.route("step", router, [END])
        return wf

    manager.workflows = manager.workflows.with_factories({"broken": broken})
    run_id = await manager.start("broken", {"task": "t"})
    run = await manager.wait(run_id, timeout=30)
    assert run.status == "failed"
    assert run.error is not None and run.error.startswith("KeyError:")
    events = await manager.store.events(run_id)
    assert events[-1].type == "run_failed" and "no route" in events[-1].data["error"]
    assert "hunter2" not in run.error and "hunter2" not in events[-1].data["error"]


async def test_a_broken_graph_is_refused_before_anything_is_stored(
    manager: RunManager, database: Database
) -> None:
    def dangling(model: str | None) -> Workflow[SlowState]:
        wf = Workflow("dangling", SlowState)

        async def step(state: SlowState, ctx: NodeContext) -> dict[str, Any]:
            return {}

        wf.add_node("step", step)  # no outgoing edge
        return wf

    manager.workflows = manager.workflows.with_factories({"dangling": dangling})
    with pytest.raises(WorkflowError, match="no outgoing edge"):
        await manager.start("dangling", {"task": "t"})
    assert (await RunRepository(database).list()).runs == []


def test_the_options_event_is_the_one_arbor_run_reads() -> None:
    """``arbor run --resume`` and ``arbor runs approve`` find a service run's model."""
    assert OPTIONS_EVENT == CLI_OPTIONS_EVENT


async def test_shutdown_leaves_runs_resumable_and_a_restart_finishes_them_once(
    database: Database,
) -> None:
    """A process stopped mid-review: the restarted one resumes the run from its checkpoint
    (the writer's call is not repeated) with the model and key it was started with."""
    entered, hold = asyncio.Event(), asyncio.Event()

    async def stuck_review(request: ChatRequest) -> str:
        if "JSON object" in (request.messages[-1].content or ""):
            entered.set()
            await hold.wait()
        return review_reply(request)

    first_model = FunctionModel(stuck_review)
    async with LLMClient(SETTINGS, models={"test:a": first_model}) as first_client:
        first = RunManager(SQLCheckpointStore(database), first_client)
        run_id = await first.start("review-loop", {"task": "t"}, model="test:a", key_id="key_9")
        await asyncio.wait_for(entered.wait(), 30)
        await first.aclose()
    assert (await RunRepository(database).get(run_id)).status == "running"
    with pytest.raises(WorkflowError, match="shut down"):
        await first.start("review-loop", {"task": "t"})

    second_model = FunctionModel(review_reply)
    async with LLMClient(SETTINGS, models={"test:a": second_model}) as second_client:
        second = RunManager(SQLCheckpointStore(database), second_client)
        try:
            assert await second.resume_interrupted() == [run_id]
            run = await second.wait(run_id, timeout=30)
        finally:
            await second.aclose()
    assert run.status == "succeeded", run.error
    # the writer ran once, in the first process; only the review was asked again
    assert len(first_model.calls) == 2 and len(second_model.calls) == 1
    assert "JSON object" in (second_model.calls[0].messages[-1].content or "")
    assert second_model.calls[0].context.key_id == "key_9"
    types = [e.type for e in await SQLCheckpointStore(database).events(run_id)]
    assert types.count("node_finished") == 2 and "run_resumed" in types


async def test_resume_interrupted_skips_unknown_workflows(database: Database) -> None:
    orphan = await RunRepository(database).create("retired-workflow", {}, status="running")
    manager = RunManager(SQLCheckpointStore(database), None)
    try:
        assert await manager.resume_interrupted() == []
        assert (await RunRepository(database).get(orphan.id)).status == "running"
    finally:
        await manager.aclose()


async def test_watch_follows_a_run_to_its_end_and_resumes_after_a_seq(
    manager: RunManager,
) -> None:
    run_id = await manager.start("review-loop", {"task": "t"}, model="test:a")
    seen = [e async for e in manager.watch(run_id)]  # ends by itself on the terminal event
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert seen[0].type == OPTIONS_EVENT and seen[-1].type == "run_finished"
    later = [e async for e in manager.watch(run_id, 3, follow=False)]
    assert [e.seq for e in later] == [e.seq for e in seen[3:]]


async def test_watch_ends_on_cancel(database: Database) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    manager = RunManager(
        SQLCheckpointStore(database), None, workflows={"slow": lambda m: slow(started, release)}
    )
    try:
        run_id = await manager.start("slow", {"task": "t"})
        await asyncio.wait_for(started.wait(), 30)

        types: list[str] = []

        async def follow() -> None:
            async for event in manager.watch(run_id):
                types.append(event.type)

        stored = len(await manager.store.events(run_id))  # nothing more until the release
        watcher = asyncio.create_task(follow())
        async with asyncio.timeout(30):  # caught up with the stored events: now following
            while len(types) < stored:  # noqa: ASYNC110 - the watcher's progress
                await asyncio.sleep(0.01)
        await manager.cancel(run_id)
        await asyncio.wait_for(watcher, 30)
        assert types[-1] == "run_cancelled" and "node_finished" in types
    finally:
        await manager.aclose()
