"""Two servers on one database: each run is driven by one of them at a time (run leases)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from _workflows import gate
from arbor.agents.workflow import END, NodeContext, Workflow
from arbor.agents.workflow.sql import SQLCheckpointStore
from arbor.core.clock import FakeClock
from arbor.runtime.runs import RunManager
from arbor.store import Database, RunRepository


class CountState(BaseModel):
    task: str
    steps: list[str] = []


class Counting:
    """first → middle → last; counts every node execution by (run, node). ``middle`` blocks
    until ``release`` is set when ``block`` is on."""

    def __init__(self, *, block: bool = False) -> None:
        self.executions: Counter[tuple[str, str]] = Counter()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.block = block

    def workflow(self, model: str | None = None) -> Workflow[CountState]:
        wf = Workflow("count", CountState)

        def node(name: str) -> Callable[[CountState, NodeContext], Any]:
            async def run(state: CountState, ctx: NodeContext) -> dict[str, Any]:
                self.executions[(ctx.run_id, name)] += 1
                if name == "middle" and self.block:
                    self.entered.set()
                    await self.release.wait()
                await asyncio.sleep(0.01)
                return {"steps": [*state.steps, name]}

            return run

        for name in ("first", "middle", "last"):
            wf.add_node(name, node(name))
        wf.edge("first", "middle")
        wf.edge("middle", "last")
        wf.edge("last", END)
        return wf


@pytest.fixture
async def second_db(db: Database) -> AsyncIterator[Database]:
    """Another connection pool on the same database, as a second server would have."""
    other = Database(db.url)
    try:
        yield other
    finally:
        await other.dispose()


def _manager(db: Database, counting: Counting, **kwargs: Any) -> RunManager:
    """A manager of the ``count`` workflow; ``kwargs`` go to :class:`RunManager`."""
    return RunManager(
        SQLCheckpointStore(db), None, workflows={"count": counting.workflow}, **kwargs
    )


async def _until(predicate: Callable[[], Any], within: float = 20) -> None:
    """Poll ``predicate`` (the database, written by another manager) until it holds."""
    async with asyncio.timeout(within):
        while not await predicate():  # noqa: ASYNC110 - nothing to wait on across servers
            await asyncio.sleep(0.05)


async def test_two_managers_racing_resume_interrupted_drive_each_run_once(
    db: Database, second_db: Database
) -> None:
    runs = RunRepository(db)
    ids = [(await runs.create("count", {"task": f"t{i}"}, status="running")).id for i in range(8)]
    counting = Counting()
    one, two = _manager(db, counting), _manager(second_db, counting)
    try:
        got_one, got_two = await asyncio.gather(one.resume_interrupted(), two.resume_interrupted())
        assert not set(got_one) & set(got_two)
        assert sorted(got_one + got_two) == sorted(ids)
        for run_id in ids:
            driver = one if run_id in got_one else two
            run = await driver.wait(run_id, timeout=20)
            assert run.status == "succeeded", run.error
        assert counting.executions == Counter(
            {(r, n): 1 for r in ids for n in ("first", "middle", "last")}
        )
        assert await one.leases.claimable() == []
        held = [(await one.leases.holder(r)).held for r in ids]
        assert held == [False] * len(ids)  # released
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_dead_owners_run_is_taken_over_after_its_lease_expires(
    db: Database, second_db: Database
) -> None:
    """Both servers read one test clock: the lease runs out when the test moves it, not when
    a loaded machine gets round to the next check."""
    clock = FakeClock(wall=time.time())
    stuck, healthy = Counting(block=True), Counting()
    dead = _manager(db, stuck, lease_seconds=30, clock=clock)
    run_id = await dead.start("count", {"task": "t"})
    await asyncio.wait_for(stuck.entered.wait(), 10)

    async def _no_release(run_id: str, owner: str) -> bool:
        return False

    dead.leases.release = _no_release  # type: ignore[method-assign]
    await dead.aclose()  # its task stops; the lease is left to expire, as after a kill -9
    left = await dead.leases.holder(run_id)
    assert left.owner == dead.owner and left.held

    alive = _manager(second_db, healthy, lease_seconds=30, sweep_seconds=0.05, clock=clock)
    try:
        assert await alive.resume_interrupted() == []  # the lease still holds
        clock.advance(29)
        assert await alive.resume_interrupted() == []  # a second before it ends, still
        assert not alive.active(run_id)
        clock.advance(2)  # now it has expired: the periodic sweep takes the run over
        await _until(lambda: _status_is(db, run_id, "succeeded"))
    finally:
        await alive.aclose()
    run = await RunRepository(db).get(run_id)
    assert run.output is not None and run.output["steps"] == ["first", "middle", "last"]
    # ``first`` had checkpointed: only the interrupted ``middle`` and what follows ran again
    assert stuck.executions == Counter({(run_id, "first"): 1, (run_id, "middle"): 1})
    assert healthy.executions == Counter({(run_id, "middle"): 1, (run_id, "last"): 1})


async def test_a_cancel_from_another_server_stops_the_driver_at_its_next_step(
    db: Database, second_db: Database
) -> None:
    counting = Counting(block=True)
    owner = _manager(db, counting)
    other = _manager(second_db, Counting())
    try:
        run_id = await owner.start("count", {"task": "t"})
        await asyncio.wait_for(counting.entered.wait(), 10)
        cancelled = await other.cancel(run_id)
        assert cancelled.status == "cancelled"
        counting.release.set()
        run = await owner.wait(run_id, timeout=10)
        assert not owner.active(run_id)
    finally:
        await owner.aclose()
        await other.aclose()
    assert run.status == "cancelled"  # the driver's late writes did not revive it
    assert (run_id, "last") not in counting.executions
    assert not (await owner.leases.holder(run_id)).held


async def test_a_cancel_from_another_server_stops_a_blocked_driver_at_its_renewal(
    db: Database, second_db: Database
) -> None:
    counting = Counting(block=True)  # ``middle`` never returns by itself
    owner = _manager(db, counting, lease_seconds=0.6)
    other = _manager(second_db, Counting())
    try:
        run_id = await owner.start("count", {"task": "t"})
        await asyncio.wait_for(counting.entered.wait(), 10)
        await other.cancel(run_id)
        await _until(lambda: _inactive(owner, run_id))
        assert (await RunRepository(db).get(run_id)).status == "cancelled"
    finally:
        await owner.aclose()
        await other.aclose()


async def test_an_approval_decided_on_another_server_finishes_the_run(
    db: Database, second_db: Database
) -> None:
    first = RunManager(SQLCheckpointStore(db), None, workflows={"gate": gate})
    second = RunManager(SQLCheckpointStore(second_db), None, workflows={"gate": gate})
    try:
        run_id = await first.start("gate", {"task": "t"})
        assert (await first.wait(run_id, timeout=10)).status == "waiting_approval"
        await second.decide(run_id, True, "ok", "ann")
        run = await second.wait(run_id, timeout=10)
        assert run.status == "succeeded", run.error
        assert run.output is not None and run.output["result"] == "shipped (ok)"
    finally:
        await first.aclose()
        await second.aclose()


async def test_resume_refuses_a_run_another_server_drives(
    db: Database, second_db: Database
) -> None:
    counting = Counting(block=True)
    owner = _manager(db, counting)
    other = _manager(second_db, Counting())
    try:
        run_id = await owner.start("count", {"task": "t"})
        await asyncio.wait_for(counting.entered.wait(), 10)
        with pytest.raises(Exception, match="being run by another process"):
            await other.resume(run_id)
        assert await other.resume_interrupted() == []
        counting.release.set()
        assert (await owner.wait(run_id, timeout=10)).status == "succeeded"
    finally:
        await owner.aclose()
        await other.aclose()


def test_bad_lease_settings_are_refused(tmp_path: Any) -> None:
    store = SQLCheckpointStore(Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"))
    with pytest.raises(ValueError, match="lease_seconds"):
        RunManager(store, None, lease_seconds=0)
    with pytest.raises(ValueError, match="sweep_seconds"):
        RunManager(store, None, sweep_seconds=-1)


async def _status_is(db: Database, run_id: str, status: str) -> bool:
    return (await RunRepository(db).get(run_id)).status == status


async def _inactive(manager: RunManager, run_id: str) -> bool:
    return not manager.active(run_id)


async def test_a_server_shut_down_gracefully_hands_its_runs_to_a_sweep_at_once(
    db: Database, second_db: Database
) -> None:
    stuck = Counting(block=True)
    leaving = _manager(db, stuck, lease_seconds=30)
    run_id = await leaving.start("count", {"task": "t"})
    await asyncio.wait_for(stuck.entered.wait(), 10)
    await leaving.aclose()  # releases: no need to wait 30 s for the lease to run out
    staying = _manager(second_db, Counting(), sweep_seconds=0.1)
    try:
        await staying.resume_interrupted()
        await _until(lambda: _status_is(db, run_id, "succeeded"), within=10)
    finally:
        await staying.aclose()


async def test_the_periodic_sweep_leaves_runs_driven_without_a_lease_alone(
    db: Database,
) -> None:
    """Like a batch's workflow item, running in another process without a lease."""
    manager = _manager(db, Counting(), sweep_seconds=0.05)
    sweeps = 0
    three_sweeps = asyncio.Event()
    claimable = manager.leases.claimable

    async def _counted(owner: str | None = None, *, unleased: bool = True) -> list[str]:
        nonlocal sweeps
        if not unleased:  # only the periodic sweep asks so
            sweeps += 1
            if sweeps > 3:  # the fourth begins: three whole sweeps are done
                three_sweeps.set()
        return await claimable(owner, unleased=unleased)

    manager.leases.claimable = _counted  # type: ignore[method-assign]
    try:
        assert await manager.resume_interrupted() == []
        foreign = await RunRepository(db).create("count", {"task": "t"}, status="running")
        sweeps = 0  # counted from here, however slowly a loaded machine runs them
        await asyncio.wait_for(three_sweeps.wait(), 20)
        assert not manager.active(foreign.id)
        assert (await RunRepository(db).get(foreign.id)).status == "running"
    finally:
        await manager.aclose()
