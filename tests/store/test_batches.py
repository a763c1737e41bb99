from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from arbor.core.errors import NotFoundError
from arbor.store import Database, migrate
from arbor.store._util import utcnow
from arbor.store.batches import BatchRepository, NewItem


def _rows(n: int, bad: frozenset[int] = frozenset()) -> list[NewItem]:
    return [
        NewItem(i, error=f"row {i + 2}: invalid JSON") if i in bad else NewItem(i, {"q": i})
        for i in range(n)
    ]


@pytest.fixture(params=["direct", "session"])
async def repo(request: pytest.FixtureRequest, db: Database) -> AsyncIterator[BatchRepository]:
    """On SQLite both the direct bulk path and the session path (PostgreSQL's)."""
    if request.param == "direct":
        yield BatchRepository(db)
        return
    database = Database(db.url, sqlite_direct=False)
    try:
        yield BatchRepository(database)
    finally:
        await database.dispose()


async def test_create_stores_items_and_malformed_rows_as_failed(repo: BatchRepository) -> None:
    batch = await repo.create(
        name="b", kind="template", spec={"template": "{{q}}"}, items=iter(_rows(5, frozenset({3})))
    )
    assert (batch.status, batch.total, batch.failed, batch.spec) == (
        "pending",
        5,
        1,
        {"template": "{{q}}"},
    )
    items = await repo.items(batch.id)
    assert [i.status for i in items] == ["pending"] * 3 + ["failed", "pending"]
    assert items[3].error == "row 5: invalid JSON" and items[3].input is None
    assert items[0].input == {"q": 0}
    progress = await repo.progress(batch.id)
    assert (progress.pending, progress.failed, progress.total) == (4, 1, 5)


async def test_claim_leases_in_order_and_only_the_holder_writes(repo: BatchRepository) -> None:
    batch = await repo.create(name="b", kind="template", spec={}, items=_rows(5))
    first = await repo.claim(batch.id, "a", 2, 30)
    second = await repo.claim(batch.id, "b", 10, 30)
    assert [c.item for c in first] == [0, 1] and [c.item for c in second] == [2, 3, 4]
    assert all(c.attempts == 1 for c in first + second)
    assert await repo.claim(batch.id, "c", 10, 30) == []
    assert not await repo.complete(batch.id, 0, "b", status="succeeded", output="x")
    assert await repo.complete(
        batch.id,
        0,
        "a",
        status="succeeded",
        output={"text": "x"},
        input_tokens=3,
        output_tokens=4,
        cost_usd=0.5,
    )
    # A second result for the same item is refused: exactly one result per item.
    assert not await repo.complete(batch.id, 0, "a", status="failed", error="again")
    item = (await repo.items(batch.id, limit=1))[0]
    assert (item.status, item.output, item.lease_owner) == ("succeeded", {"text": "x"}, None)
    progress = await repo.progress(batch.id)
    assert (progress.succeeded, progress.running, progress.input_tokens) == (1, 4, 3)
    assert progress.cost_usd == pytest.approx(0.5)


async def test_expired_leases_are_reclaimed_and_the_old_holder_is_fenced(
    repo: BatchRepository,
) -> None:
    batch = await repo.create(name="b", kind="template", spec={}, items=_rows(3))
    await repo.claim(batch.id, "dead", 3, 0.05)
    await asyncio.sleep(0.1)
    again = await repo.claim(batch.id, "alive", 2, 30)
    assert [(c.item, c.attempts) for c in again] == [(0, 2), (1, 2)]
    assert not await repo.complete(batch.id, 0, "dead", status="succeeded")
    assert await repo.complete(batch.id, 0, "alive", status="succeeded")
    assert await repo.renew(batch.id, "alive", 30) == 1
    expiry = await repo.next_lease_expiry(batch.id)
    assert expiry is not None and expiry > utcnow() - timedelta(seconds=1)


async def test_release_returns_items_to_pending(repo: BatchRepository) -> None:
    batch = await repo.create(name="b", kind="agent", spec={}, items=_rows(2))
    await repo.claim(batch.id, "a", 2, 30)
    assert await repo.release(batch.id, 0, "a", error=None, uncount=True)
    assert await repo.release(batch.id, 1, "a", error="http: 500", uncount=False)
    items = await repo.items(batch.id)
    assert [(i.status, i.attempts, i.error) for i in items] == [
        ("pending", 0, None),
        ("pending", 1, "http: 500"),
    ]
    assert await repo.set_run_id(batch.id, 0, "a", "run_x") is False  # not held any more


async def test_cancel_cancels_unfinished_items_and_refuses_late_results(
    repo: BatchRepository,
) -> None:
    batch = await repo.create(name="b", kind="template", spec={}, items=_rows(4))
    await repo.claim(batch.id, "a", 2, 30)
    await repo.complete(batch.id, 0, "a", status="succeeded")
    cancelled = await repo.cancel(batch.id)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert (cancelled.succeeded, cancelled.cancelled) == (1, 3)
    assert not await repo.complete(batch.id, 1, "a", status="succeeded")
    assert await repo.cancel(batch.id) is None  # already finished


async def test_status_transitions_and_listing(repo: BatchRepository) -> None:
    older = await repo.create(name="old", kind="template", spec={}, items=_rows(1))
    newer = await repo.create(name="new", kind="workflow", spec={}, items=_rows(1))
    paused = await repo.set_status(older.id, "paused", paused_reason="budget")
    assert paused is not None and (paused.status, paused.paused_reason) == ("paused", "budget")
    assert await repo.set_status(older.id, "running", only_from=("pending",)) is None
    listed = await repo.list()
    assert [b.id for b in listed] == [newer.id, older.id]
    assert [b.id for b in await repo.list(status="paused")] == [older.id]
    with pytest.raises(NotFoundError, match="bat_nope"):
        await repo.get("bat_nope")
    live = await repo.get(newer.id, progress=True)
    assert live.progress is not None and live.progress.pending == 1


@pytest.mark.postgres
async def test_a_status_change_waits_for_a_concurrent_one_and_sees_it(postgres_url: str) -> None:
    """A pause committed while an executor starts the batch wins: the start reads the row
    under a lock, so it sees "paused" and changes nothing (without the lock it read the old
    "running", reported a start and cleared the pause's reason)."""
    from sqlalchemy import text

    db = Database(postgres_url)
    try:
        await migrate(db)
        repo = BatchRepository(db)
        batch = await repo.create(name="b", kind="template", spec={}, items=iter(_rows(2)))
        assert await repo.set_status(batch.id, "running") is not None
        async with db.engine.connect() as other:
            await other.begin()
            pause = "UPDATE batches SET status = 'paused', paused_reason = 'budget' WHERE id = :i"
            await other.execute(text(pause), {"i": batch.id})
            start = asyncio.create_task(
                repo.set_status(batch.id, "running", only_from=("pending", "running"))
            )
            await asyncio.sleep(0.5)
            assert not start.done()  # waiting on the pausing transaction's row lock
            await other.commit()
        assert await start is None
        after = await repo.get(batch.id)
        assert (after.status, after.paused_reason) == ("paused", "budget")
    finally:
        await db.dispose()
