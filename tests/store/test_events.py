from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

import arbor.store.events
from arbor.core.errors import NotFoundError
from arbor.store import Database, EventRepository, NewEvent, RunRepository


async def _run(db: Database) -> str:
    return (await RunRepository(db).create("review-loop")).id


async def test_append_numbers_events_per_run_from_one(db: Database) -> None:
    events = EventRepository(db)
    a, b = await _run(db), await _run(db)
    first = await events.append(a, "node_started", node="plan", data={"attempt": 1})
    assert (first.run_id, first.seq, first.type, first.node) == (a, 1, "node_started", "plan")
    assert first.data == {"attempt": 1} and first.id.startswith("evt_")
    assert (await events.append(b, "run_started")).seq == 1  # each run counts on its own
    many = await events.append_many(
        a, [NewEvent(type="llm_call", node="plan"), NewEvent(type="node_finished", node="plan")]
    )
    assert [e.seq for e in many] == [2, 3]
    assert await events.last_seq(a) == 3 and await events.last_seq(b) == 1
    assert await events.append_many(a, []) == []


async def test_list_replays_in_order_after_a_seq(db: Database) -> None:
    events = EventRepository(db)
    run_id = await _run(db)
    for i in range(10):
        await events.append(run_id, "tick", data={"i": i, "nested": {"list": [i, None]}})
    replay = await events.list(run_id)
    assert [e.seq for e in replay] == list(range(1, 11))
    assert replay[3].data == {"i": 3, "nested": {"list": [3, None]}}
    # SSE resume: the client saw up to Last-Event-ID 6.
    assert [e.seq for e in await events.list(run_id, after_seq=6)] == [7, 8, 9, 10]
    assert [e.seq for e in await events.list(run_id, after_seq=2, limit=3)] == [3, 4, 5]
    assert await events.list(run_id, after_seq=10) == []
    assert await events.list("run_missing") == []


async def test_concurrent_appends_get_distinct_consecutive_seqs(db: Database) -> None:
    events = EventRepository(db)
    run_id = await _run(db)
    other = await _run(db)

    async def writer(n: int) -> list[int]:
        seqs = []
        for i in range(5):
            event = await events.append(run_id, "tick", data={"writer": n, "i": i})
            seqs.append(event.seq)
        return seqs

    writers = asyncio.gather(*(writer(n) for n in range(8)))
    results, _ = await asyncio.gather(writers, events.append(other, "x"))
    assert sorted(s for r in results for s in r) == list(range(1, 41))
    assert all(r == sorted(r) for r in results)
    stored = await events.list(run_id)
    assert [e.seq for e in stored] == list(range(1, 41))
    assert await events.last_seq(other) == 1


async def test_append_to_a_missing_run_is_not_found(db: Database) -> None:
    with pytest.raises(NotFoundError, match="run_missing"):
        await EventRepository(db).append("run_missing", "tick")


async def test_events_go_with_their_run(db: Database) -> None:
    events = EventRepository(db)
    run_id = await _run(db)
    await events.append(run_id, "tick")
    await RunRepository(db).delete(run_id)
    assert await events.list(run_id) == []


async def test_a_lost_seq_race_is_retried(
    session_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unique (run_id, seq) constraint guards the numbering: a writer that read a stale
    maximum collides, rolls back and tries again with a fresh one. (The direct SQLite path
    numbers under the write lock, so it has no race to lose.)"""
    events = EventRepository(session_db)
    run_id = await _run(session_db)
    await events.append(run_id, "first")
    real = arbor.store.events._max_seq
    calls = 0

    async def stale_once(session: AsyncSession, run: str) -> int:
        nonlocal calls
        calls += 1
        return 0 if calls == 1 else await real(session, run)

    monkeypatch.setattr(arbor.store.events, "_max_seq", stale_once)
    second = await events.append(run_id, "second")
    assert (second.seq, calls) == (2, 2)
    assert [e.type for e in await events.list(run_id)] == ["first", "second"]
