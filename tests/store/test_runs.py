from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Text, func, select
from sqlalchemy.exc import StatementError

import arbor.store.runs
from arbor.core.errors import NotFoundError, WorkflowError
from arbor.store import (
    Database,
    EventRepository,
    NewEvent,
    RunRepository,
    fold_deltas,
)
from arbor.store.tables import CheckpointRow, EventRow, IdempotencyRow

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def _count(db: Database, table: Any) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


# ---- CRUD ---------------------------------------------------------------------------------


async def test_create_get_and_defaults(db: Database) -> None:
    runs = RunRepository(db)
    run = await runs.create("review-loop", {"task": "write fizzbuzz"}, thread_id="thr_1")
    assert run.id.startswith("run_") and run.status == "pending" and not run.finished
    assert (run.output, run.error, run.current_node, run.finished_at) == (None, None, None, None)
    assert await runs.get(run.id) == run
    child = await runs.create("sub", parent_id=run.id, run_id="run_child")
    assert (await runs.get("run_child")).parent_id == run.id and child.input == {}
    with pytest.raises(NotFoundError, match="run_nope"):
        await runs.get("run_nope")
    with pytest.raises(ValueError, match="run status"):
        await runs.create("w", status="paused")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        await runs.create("w", created_at=datetime(2026, 1, 1))


async def test_update_fields_and_finished_at(db: Database) -> None:
    runs = RunRepository(db)
    run = await runs.create("w", {"x": 1})
    running = await runs.update(run.id, status="running", current_node="plan")
    assert (running.status, running.current_node, running.finished_at) == ("running", "plan", None)
    assert running.updated_at >= run.updated_at
    done = await runs.update(run.id, status="succeeded", output={"answer": 42})
    assert done.finished and done.finished_at is not None
    assert done.output == {"answer": 42} and done.current_node == "plan"  # None kept it
    assert await runs.get(run.id) == done
    failed = await runs.update(
        (await runs.create("w")).id, status="failed", error="boom\nTraceback…"
    )
    assert failed.error == "boom\nTraceback…" and failed.output is None
    with pytest.raises(NotFoundError):
        await runs.update("run_nope", status="running")


async def test_conditional_update_refuses_to_overwrite(db: Database) -> None:
    runs = RunRepository(db)
    run = await runs.create("w", status="running")
    await runs.update(run.id, status="succeeded")
    with pytest.raises(WorkflowError, match="succeeded") as info:
        await runs.update(run.id, status="cancelled", only_from=("pending", "running"))
    assert info.value.run_id == run.id
    assert (await runs.get(run.id)).status == "succeeded"
    other = await runs.create("w")
    cancelled = await runs.update(other.id, status="cancelled", only_from=["pending"])
    assert cancelled.status == "cancelled"


async def test_resumable_runs_oldest_first(db: Database) -> None:
    runs = RunRepository(db)
    statuses = ["running", "succeeded", "pending", "waiting_approval", "failed", "cancelled"]
    created = [
        await runs.create("w", status=s, created_at=T0 + timedelta(seconds=i))  # type: ignore[arg-type]
        for i, s in enumerate(statuses)
    ]
    assert [r.id for r in await runs.resumable()] == [created[0].id, created[2].id]


# ---- list: filters and keyset pagination ---------------------------------------------------


async def test_list_filters_and_paginates_newest_first(db: Database) -> None:
    runs = RunRepository(db)
    ids: list[str] = []
    for i in range(25):
        run = await runs.create(
            "alpha" if i % 2 else "beta",
            status="succeeded" if i % 3 else "failed",
            # Pairs share a timestamp: the id breaks the tie.
            created_at=T0 + timedelta(seconds=i // 2),
        )
        ids.append(run.id)
    newest_first = sorted(
        ids, key=lambda i: (T0 + timedelta(seconds=ids.index(i) // 2), i), reverse=True
    )

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await runs.list(limit=10, cursor=cursor)
        seen += [r.id for r in page.runs]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == newest_first and pages == 3

    alpha = await runs.list(workflow="alpha", limit=100)
    assert [r.id for r in alpha.runs] == [i for i in newest_first if ids.index(i) % 2]
    assert alpha.next_cursor is None
    failed_beta = await runs.list(workflow="beta", status="failed", limit=2)
    expected = [i for i in newest_first if ids.index(i) % 2 == 0 and ids.index(i) % 3 == 0]
    assert [r.id for r in failed_beta.runs] == expected[:2]
    rest = await runs.list(workflow="beta", status="failed", cursor=failed_beta.next_cursor)
    assert [r.id for r in rest.runs] == expected[2:]

    # A run created after the first page does not shift the later pages.
    first = await runs.list(limit=5)
    await runs.create("alpha", created_at=T0 + timedelta(days=1))
    second = await runs.list(limit=5, cursor=first.next_cursor)
    assert [r.id for r in second.runs] == newest_first[5:10]


async def test_list_by_thread_and_bad_arguments(db: Database) -> None:
    runs = RunRepository(db)
    a = await runs.create("w", thread_id="thr_a")
    await runs.create("w", thread_id="thr_b")
    assert [r.id for r in (await runs.list(thread_id="thr_a")).runs] == [a.id]
    with pytest.raises(ValueError, match="invalid cursor"):
        await runs.list(cursor="not-a-cursor!")
    with pytest.raises(ValueError, match="limit"):
        await runs.list(limit=0)


# ---- checkpoints ---------------------------------------------------------------------------


def test_fold_deltas_replaces_top_level_keys() -> None:
    assert fold_deltas([{"a": 1, "b": {"x": 1}}, {"b": {"y": 2}}, {"c": None}]) == {
        "a": 1,
        "b": {"y": 2},
        "c": None,
    }
    assert fold_deltas([]) == {}


async def test_checkpoint_writes_everything_and_load_state_folds(db: Database) -> None:
    runs = RunRepository(db)
    run = await runs.create("review-loop", {"task": "t"}, status="running")
    assert await runs.load_state(run.id) == arbor.store.runs.RunState(
        state={}, last_seq=0, node=None
    )
    steps: list[tuple[str, dict[str, Any]]] = [
        ("__start__", {"task": "t", "draft": None, "iterations": 0}),
        ("code", {"draft": "v1", "iterations": 1}),
        ("review", {"verdict": "revise", "notes": ["add tests"]}),
        ("code", {"draft": "v2", "iterations": 2}),
        ("review", {"verdict": "ok", "notes": []}),
    ]
    expected: dict[str, Any] = {}
    for seq, (node, delta) in enumerate(steps, start=1):
        result = await runs.checkpoint(
            run.id,
            node,
            delta,
            outputs={f"{node}:{seq}:llm": {"text": f"reply {seq}"}},
            events=[NewEvent(type="node_finished", node=node, data={"seq": seq})],
        )
        expected.update(delta)
        assert (result.checkpoint.seq, result.checkpoint.node) == (seq, node)
        assert result.checkpoint.delta == delta
        assert [e.seq for e in result.events] == [seq]
        state = await runs.load_state(run.id)
        assert (state.state, state.last_seq, state.node) == (expected, seq, node)
    assert (await runs.get(run.id)).current_node == "review"
    stored = await runs.checkpoints(run.id)
    assert [c.delta for c in stored] == [d for _, d in steps]
    assert fold_deltas(c.delta for c in stored) == expected
    assert [c.seq for c in await runs.checkpoints(run.id, after_seq=3)] == [4, 5]
    reply = await runs.get_idempotent(run.id, "code:4:llm")
    assert reply is not None and reply.value == {"text": "reply 4"}
    assert [e.type for e in await EventRepository(db).list(run.id)] == ["node_finished"] * 5
    with pytest.raises(NotFoundError):
        await runs.load_state("run_nope")
    with pytest.raises(NotFoundError):
        await runs.checkpoint("run_nope", "n", {})


async def test_checkpoint_events_share_the_run_sequence(db: Database) -> None:
    runs, events = RunRepository(db), EventRepository(db)
    run = await runs.create("w")
    await events.append(run.id, "run_started")
    result = await runs.checkpoint(
        run.id, "a", {"k": 1}, events=[NewEvent(type="llm_call"), NewEvent(type="node_finished")]
    )
    assert [e.seq for e in result.events] == [2, 3]
    assert (await events.append(run.id, "run_finished")).seq == 4


async def test_a_failed_checkpoint_writes_nothing(
    session_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash between the checkpoint row and the events: all of it is rolled back.
    (tests/store/test_sqlite_runs.py crashes the direct SQLite path the same way.)"""
    db = session_db
    runs = RunRepository(db)
    run = await runs.create("w", status="running")
    await runs.checkpoint(run.id, "a", {"k": 1}, outputs={"a:llm": "one"})

    async def crash(*args: object) -> object:
        raise RuntimeError("killed mid-transaction")

    monkeypatch.setattr(arbor.store.runs, "append_events", crash)
    with pytest.raises(RuntimeError, match="killed"):
        await runs.checkpoint(
            run.id, "b", {"k": 2}, outputs={"b:llm": "two"}, events=[NewEvent(type="x")]
        )
    monkeypatch.undo()

    state = await runs.load_state(run.id)
    assert (state.state, state.last_seq, state.node) == ({"k": 1}, 1, "a")
    assert await runs.get_idempotent(run.id, "b:llm") is None
    assert (await runs.get(run.id)).current_node == "a"
    assert await _count(db, CheckpointRow) == 1
    assert await _count(db, IdempotencyRow) == 1
    assert await _count(db, EventRow) == 0
    # The run carries on from where it was.
    assert (await runs.checkpoint(run.id, "b", {"k": 2})).checkpoint.seq == 2


async def test_a_non_json_payload_fails_the_whole_checkpoint(db: Database) -> None:
    runs = RunRepository(db)
    run = await runs.create("w")
    with pytest.raises(StatementError, match="JSON serializable"):
        await runs.checkpoint(
            run.id, "a", {"k": 1}, events=[NewEvent(type="x", data={"bad": object()})]
        )
    assert (await runs.load_state(run.id)).last_seq == 0
    assert await _count(db, CheckpointRow) == 0


async def test_expected_seq_fences_off_a_second_writer(db: Database) -> None:
    runs = RunRepository(db)
    run = await runs.create("w")
    loaded = await runs.load_state(run.id)
    await runs.checkpoint(run.id, "a", {"k": 1}, expected_seq=loaded.last_seq)
    # A second process that loaded the same state is refused: it is behind.
    with pytest.raises(WorkflowError, match="another process") as info:
        await runs.checkpoint(run.id, "a", {"k": 99}, expected_seq=loaded.last_seq)
    assert info.value.run_id == run.id
    assert (await runs.load_state(run.id)).state == {"k": 1}


async def test_storage_grows_linearly_with_steps(db: Database) -> None:
    """A big state changed one key per step stores one small delta per step, not the state."""
    runs = RunRepository(db)
    run = await runs.create("w")
    initial = {f"doc{i}": "x" * 200 for i in range(50)}  # ~10 KB of state
    await runs.checkpoint(run.id, "__start__", initial)
    steps = 40
    for i in range(steps):
        await runs.checkpoint(run.id, "step", {"counter": i})

    stored = await runs.checkpoints(run.id)
    sizes = [len(json.dumps(c.delta)) for c in stored[1:]]
    assert len(stored) == steps + 1
    assert max(sizes) <= 20 and max(sizes) - min(sizes) <= 2  # constant, not growing
    async with db.session() as session:  # the bytes in the table, as the database sees them
        total = await session.scalar(
            select(func.sum(func.length(func.cast(CheckpointRow.delta, Text))))
        )
    assert int(total or 0) < len(json.dumps(initial)) + steps * 40
    state = await runs.load_state(run.id)
    assert state.state == {**initial, "counter": steps - 1} and state.last_seq == steps + 1


# ---- idempotency -----------------------------------------------------------------------------


async def test_record_idempotent_is_insert_or_ignore(db: Database) -> None:
    runs = RunRepository(db)
    run = await runs.create("w")
    assert await runs.get_idempotent(run.id, "llm:1") is None
    first = await runs.record_idempotent(run.id, "llm:1", {"text": "first"})
    assert (first.key, first.value) == ("llm:1", {"text": "first"})
    again = await runs.record_idempotent(run.id, "llm:1", {"text": "second"})
    assert again == first  # the first writer wins; the loser gets the stored value
    got = await runs.get_idempotent(run.id, "llm:1")
    assert got == first
    # Values are any JSON, None included; keys are per run.
    other = await runs.create("w")
    assert (await runs.record_idempotent(other.id, "llm:1", None)).value is None
    stored_none = await runs.get_idempotent(other.id, "llm:1")
    assert stored_none is not None and stored_none.value is None
    assert (await runs.record_idempotent(run.id, "tool:2", [1, "two", 3.5])).value == [
        1,
        "two",
        3.5,
    ]
    # A checkpoint repeating an already recorded key keeps the recorded value.
    await runs.checkpoint(run.id, "n", {}, outputs={"llm:1": "late", "llm:3": "new"})
    assert (await runs.get_idempotent(run.id, "llm:1")) == first
    new = await runs.get_idempotent(run.id, "llm:3")
    assert new is not None and new.value == "new"


async def test_concurrent_record_idempotent_has_one_winner(db: Database) -> None:
    runs = RunRepository(db)
    run = await runs.create("w")
    results = await asyncio.gather(*(runs.record_idempotent(run.id, "k", i) for i in range(8)))
    assert len({r.value for r in results}) == 1
    assert await _count(db, IdempotencyRow) == 1


async def test_delete_takes_the_run_history_along(db: Database) -> None:
    runs = RunRepository(db)
    run = await runs.create("w")
    await runs.checkpoint(run.id, "a", {"k": 1}, outputs={"x": 1}, events=[NewEvent(type="e")])
    await runs.delete(run.id)
    for table in (CheckpointRow, IdempotencyRow, EventRow):
        assert await _count(db, table) == 0
    with pytest.raises(NotFoundError):
        await runs.delete(run.id)
