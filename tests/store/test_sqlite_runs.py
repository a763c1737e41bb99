"""The direct SQLite statements write exactly the rows the SQLAlchemy path writes: each path
reads the other's runs, checkpoints, outputs and events back equal, and a failure in the
middle of a direct checkpoint leaves nothing behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.exc import StatementError

import arbor.store._sqlite_runs
from arbor.store import Database, EventRepository, NewEvent, RunRepository, migrate


@pytest.fixture
async def paths(sqlite_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """The same SQLite file through the direct path and through sessions only."""
    direct, sessions = Database(sqlite_url), Database(sqlite_url, sqlite_direct=False)
    try:
        await migrate(sessions)
        yield direct, sessions
    finally:
        await direct.dispose()
        await sessions.dispose()


@pytest.mark.parametrize("writer", ["direct", "sessions"])
async def test_each_path_reads_what_the_other_wrote(
    paths: tuple[Database, Database], writer: str
) -> None:
    write_db, read_db = paths if writer == "direct" else paths[::-1]
    w, r = RunRepository(write_db), RunRepository(read_db)
    created = datetime(2026, 3, 1, 12, 0, 0, 0, tzinfo=UTC)  # microsecond 0 still round-trips
    run = await w.create("wf", {"task": "é ☃", "n": [1, 2.5, None]}, created_at=created)
    assert await r.get(run.id) == run
    step = await w.checkpoint(
        run.id,
        "plan",
        {"plan": {"steps": ["a", "b"]}, "score": 0.25},
        outputs={"plan#1:llm:0": {"text": "hi"}, "plan#1:llm:1": 7},
        events=[NewEvent(type="node_finished", node="plan", data={"changed": ["plan"]})],
    )
    assert await r.checkpoints(run.id) == [step.checkpoint]
    assert await EventRepository(read_db).list(run.id) == step.events
    assert (await r.load_state(run.id)).state == {"plan": {"steps": ["a", "b"]}, "score": 0.25}
    assert (await r.get_idempotent(run.id, "plan#1:llm:1")) == await w.get_idempotent(
        run.id, "plan#1:llm:1"
    )
    done = await w.update(run.id, status="succeeded", output={"answer": 42})
    assert await r.get(run.id) == done and done.finished_at is not None
    loaded_run, loaded_state = await r.load_run(run.id)
    assert loaded_run == done and loaded_state.last_seq == 1 and loaded_state.node == "plan"


@pytest.mark.parametrize("value", [3, 3.5, "3", None, True, [1], {"a": None}, "null"])
async def test_json_values_of_every_shape_come_back_as_stored(
    paths: tuple[Database, Database], value: Any
) -> None:
    """The JSON column has NUMERIC affinity: a bare number is stored as a number."""
    direct, sessions = paths
    run = await RunRepository(direct).create("w")
    recorded = await RunRepository(direct).record_idempotent(run.id, "k", value)
    assert recorded.value == value and type(recorded.value) is type(value)
    for db in paths:
        got = await RunRepository(db).get_idempotent(run.id, "k")
        assert got is not None and got.value == value and type(got.value) is type(value)
    assert sessions.direct is None


async def test_a_crash_inside_a_direct_checkpoint_writes_nothing(
    paths: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, _ = paths
    runs = RunRepository(direct)
    run = await runs.create("w", status="running")
    await runs.checkpoint(run.id, "a", {"k": 1}, outputs={"a:llm": "one"})

    def crash(*args: object) -> object:
        raise RuntimeError("killed mid-transaction")

    monkeypatch.setattr(arbor.store._sqlite_runs, "_insert_events", crash)
    with pytest.raises(RuntimeError, match="killed"):
        await runs.checkpoint(
            run.id, "b", {"k": 2}, outputs={"b:llm": "two"}, events=[NewEvent(type="x")]
        )
    monkeypatch.undo()
    state = await runs.load_state(run.id)
    assert (state.state, state.last_seq, state.node) == ({"k": 1}, 1, "a")
    assert await runs.get_idempotent(run.id, "b:llm") is None
    assert (await runs.get(run.id)).current_node == "a"
    assert await EventRepository(direct).list(run.id) == []
    assert (await runs.checkpoint(run.id, "b", {"k": 2})).checkpoint.seq == 2


async def test_a_value_json_cannot_hold_fails_like_a_session(
    paths: tuple[Database, Database],
) -> None:
    for db in paths:
        runs = RunRepository(db)
        run = await runs.create("w")
        with pytest.raises(StatementError, match="JSON serializable"):
            await runs.checkpoint(run.id, "a", {"k": object()})
        with pytest.raises(StatementError, match="JSON serializable"):
            await EventRepository(db).append(run.id, "x", data={"bad": {1, 2}})
        assert (await runs.load_state(run.id)).last_seq == 0
