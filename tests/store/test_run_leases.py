"""Run leases: one holder at a time, takeover after expiry, renewal stops at a cancel."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from arbor.core.clock import FakeClock
from arbor.core.errors import NotFoundError
from arbor.store import Database, RunRepository
from arbor.store._util import utcnow
from arbor.store.run_leases import RunLeases


async def test_one_holder_at_a_time_until_release(db: Database) -> None:
    runs, leases = RunRepository(db), RunLeases(db)
    run = await runs.create("wf", {}, status="running")
    assert await leases.acquire(run.id, "a", 30)
    assert not await leases.acquire(run.id, "b", 30)
    assert await leases.acquire(run.id, "a", 30)  # its own lease: extended
    holder = await leases.holder(run.id)
    assert holder.owner == "a" and holder.held and holder.expires_at is not None
    assert holder.expires_at > utcnow() + timedelta(seconds=20)
    assert not await leases.release(run.id, "b")  # not b's to release
    assert await leases.release(run.id, "a")
    assert not (await leases.holder(run.id)).held  # released: expired at once
    assert await leases.acquire(run.id, "b", 30)


async def test_an_expired_lease_is_taken_over_and_its_old_holder_cannot_renew(
    db: Database,
) -> None:
    clock = FakeClock(wall=time.time())  # the lease ends when the test says, not the load
    runs, leases = RunRepository(db), RunLeases(db, clock)
    run = await runs.create("wf", {}, status="running")
    assert await leases.acquire(run.id, "dead", 30)
    clock.advance(29)
    assert await leases.claimable() == []
    assert not await leases.acquire(run.id, "alive", 30)
    assert (await leases.holder(run.id)).held
    clock.advance(2)
    assert not (await leases.holder(run.id)).held
    assert await leases.claimable() == [run.id]
    assert await leases.acquire(run.id, "alive", 30)
    assert not await leases.renew(run.id, "dead", 30)
    assert await leases.renew(run.id, "alive", 30)
    assert await leases.claimable() == []
    assert await leases.claimable("alive") == [run.id]


async def test_racing_acquires_have_one_winner(db: Database) -> None:
    runs, leases = RunRepository(db), RunLeases(db)
    run = await runs.create("wf", {}, status="pending")
    won = await asyncio.gather(*(leases.acquire(run.id, f"p{i}", 30) for i in range(8)))
    assert sum(won) == 1


async def test_finished_runs_cannot_be_leased_and_renewal_fails_after_a_cancel(
    db: Database,
) -> None:
    runs, leases = RunRepository(db), RunLeases(db)
    done = await runs.create("wf", {}, status="succeeded")
    assert not await leases.acquire(done.id, "a", 30)
    run = await runs.create("wf", {}, status="running")
    assert await leases.acquire(run.id, "a", 30)
    await runs.update(run.id, status="cancelled")  # by another process
    assert not await leases.renew(run.id, "a", 30)
    assert await leases.claimable() == []


async def test_a_run_created_leased_is_not_claimable(db: Database) -> None:
    runs, leases = RunRepository(db), RunLeases(db)
    owned = await runs.create("wf", {}, lease=("me", utcnow() + timedelta(seconds=30)))
    free = await runs.create("wf", {})
    assert (await leases.holder(owned.id)).owner == "me"
    assert await leases.claimable() == [free.id]
    assert await leases.claimable("me") == [owned.id, free.id]


async def test_a_periodic_sweep_takes_released_and_expired_runs_but_not_unleased_ones(
    db: Database,
) -> None:
    """A never-leased run may be a batch's workflow item running right now."""
    runs, leases = RunRepository(db), RunLeases(db)
    unleased = await runs.create("wf", {}, status="running")
    released = await runs.create("wf", {}, status="running")
    assert await leases.acquire(released.id, "gone", 30)
    assert await leases.release(released.id, "gone")
    assert await leases.claimable(unleased=False) == [released.id]
    assert await leases.claimable() == [unleased.id, released.id]


async def test_bad_arguments_and_unknown_runs(db: Database) -> None:
    leases = RunLeases(db)
    with pytest.raises(NotFoundError, match="run 'run_nope' not found"):
        await leases.acquire("run_nope", "a", 30)
    with pytest.raises(NotFoundError):
        await leases.holder("run_nope")
    with pytest.raises(ValueError, match="more than 0 seconds"):
        await leases.acquire("run_nope", "a", 0)
    with pytest.raises(ValueError, match="non-empty"):
        await leases.renew("run_nope", "", 30)
