"""Watching a run's events: live through the hub, by fallback poll from another store,
replay of a finished run, resume after a seq; on the in-memory store, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import pytest
from pydantic import BaseModel

from arbor.agents.workflow import (
    END,
    EVENT_TYPES,
    EventHub,
    InMemoryCheckpointStore,
    NodeContext,
    RunEvent,
    Workflow,
    WorkflowRunner,
)
from arbor.agents.workflow.sql import SQLCheckpointStore
from arbor.core.errors import NotFoundError
from arbor.store import Database


class Team(BaseModel):
    code: str = ""
    tests: str = ""
    docs: str = ""
    report: str = ""


def team() -> Workflow[Team]:
    wf = Workflow("team", Team)

    def make(key: str) -> Any:
        async def node(state: Team, ctx: NodeContext) -> dict[str, Any]:
            await asyncio.sleep(0.001)  # let branches and watchers interleave
            return {key: f"{key} done"}

        return node

    for name in ("code", "tests", "docs", "report"):
        wf.add_node(name, make(name))
    wf.fan_out("code", ["tests", "docs"], join="report")
    wf.edge("report", END)
    return wf


async def _collect(store: Any, run_id: str, after: int = 0, **kw: Any) -> list[RunEvent]:
    out: list[RunEvent] = []
    async with asyncio.timeout(20), aclosing(store.watch(run_id, after, **kw)) as events:
        async for event in events:
            out.append(event)
    return out


async def test_concurrent_watchers_see_every_event_once_in_order(db: Database) -> None:
    hub = EventHub()
    store = SQLCheckpointStore(db, hub=hub, poll_interval=30.0)  # live: the hub alone
    elsewhere = SQLCheckpointStore(db, poll_interval=0.05)  # "another process": polls
    runner = WorkflowRunner(team(), store)
    run_id = await store.create_run("team", {})
    live = asyncio.create_task(_collect(store, run_id))
    polled = asyncio.create_task(_collect(elsewhere, run_id))
    async with asyncio.timeout(20):  # the live watcher subscribes, however slowly
        while not hub.watching(run_id):  # noqa: ASYNC110 - the hub has no "subscribed" event
            await asyncio.sleep(0.01)
    result = await runner.resume(run_id)
    assert result.status == "succeeded", result.error
    stored = await store.events(run_id)
    for seen in (await live, await polled):
        assert [e.seq for e in seen] == list(range(1, len(stored) + 1))
        assert [(e.type, e.node) for e in seen] == [(e.type, e.node) for e in stored]
    assert [e.type for e in stored].count("node_finished") == 4
    assert stored[-1].type == "run_finished"
    assert hub.watchers() == 0 and elsewhere.hub.watchers() == 0


async def test_replay_of_a_finished_run_and_resume_after_a_seq(db: Database) -> None:
    store = SQLCheckpointStore(db)
    result = await WorkflowRunner(team(), store).start({})
    stored = await store.events(result.run_id)
    replay = await _collect(store, result.run_id)  # follow=True still ends: the run is over
    assert [(e.seq, e.type) for e in replay] == [(e.seq, e.type) for e in stored]
    tail = await _collect(store, result.run_id, 3)
    assert [e.seq for e in tail] == list(range(4, len(stored) + 1))
    assert await _collect(store, result.run_id, len(stored)) == []


async def test_live_delivery_does_not_wait_for_the_poll() -> None:
    store = InMemoryCheckpointStore(poll_interval=3600.0)
    run_id = await store.create_run("w", {})
    seen: list[str] = []

    async def watch() -> None:
        async for event in store.watch(run_id):
            seen.append(event.type)

    task = asyncio.create_task(watch())
    await asyncio.sleep(0)
    await store.append_event(run_id, RunEvent("node_started", "a"))
    await store.checkpoint(run_id, "a", {}, [RunEvent("node_finished", "a")])
    await store.append_event(run_id, RunEvent("run_finished"))
    async with asyncio.timeout(20):  # an hour-long poll would time this out
        await task
    assert seen == ["node_started", "node_finished", "run_finished"]
    assert store.hub.watchers() == 0


async def test_follow_false_returns_what_is_stored_and_early_exit_leaves_nothing() -> None:
    store = InMemoryCheckpointStore()
    run_id = await store.create_run("w", {})
    for node in ("a", "b", "c"):
        await store.append_event(run_id, RunEvent("node_started", node))
    assert [e.node for e in await _collect(store, run_id, follow=False)] == ["a", "b", "c"]
    tasks_before = len(asyncio.all_tasks())
    async with aclosing(store.watch(run_id)) as events:
        async for event in events:
            assert event.node == "a"
            break
    assert store.hub.watchers() == 0
    assert len(asyncio.all_tasks()) == tasks_before
    # A watcher of a run that has not ended can be cancelled; it unsubscribes.
    waiting = asyncio.create_task(_collect(store, run_id, 3))
    await asyncio.sleep(0.01)
    assert store.hub.watchers() == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert store.hub.watchers() == 0


async def test_watcher_catches_up_after_overflowing_its_backlog() -> None:
    store = InMemoryCheckpointStore(poll_interval=3600.0)
    run_id = await store.create_run("w", {})
    await store.append_event(run_id, RunEvent("run_started"))
    seen: list[int] = []
    async with asyncio.timeout(10), aclosing(store.watch(run_id)) as events:
        async for event in events:
            seen.append(event.seq)
            if event.seq == 1:
                for _ in range(1500):  # more than a subscription buffers
                    await store.append_event(run_id, RunEvent("node_started", "n"))
                await store.append_event(run_id, RunEvent("run_cancelled"))
    assert seen == list(range(1, 1503))


async def test_a_run_that_ends_without_a_terminal_event_still_ends_the_watch() -> None:
    store = InMemoryCheckpointStore(poll_interval=0.02)
    run_id = await store.create_run("w", {})
    await store.append_event(run_id, RunEvent("run_started"))
    await store.set_status(run_id, "cancelled")
    assert [e.type for e in await _collect(store, run_id)] == ["run_started"]


async def test_unknown_run_is_not_found(db: Database) -> None:
    for store in (InMemoryCheckpointStore(), SQLCheckpointStore(db)):
        with pytest.raises(NotFoundError):
            await _collect(store, "run_missing")
        assert store.hub.watchers() == 0


def test_event_types_are_listed_once() -> None:
    assert len(set(EVENT_TYPES)) == len(EVENT_TYPES) == 11
    assert {"llm_call", "tool_call", "run_cancelled", "approval_decided"} <= set(EVENT_TYPES)
