"""Direct SQLite transactions: inline when the lock is free, on the worker thread when it is
not (the loop keeps running), rolled back on any error, WAL checkpoints off the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

import arbor.store._sqlite_direct
from arbor.store import Database, RunRepository, migrate
from arbor.store._sqlite_direct import SQLiteDirect


@pytest.fixture
async def lite(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(sqlite_url)
    try:
        await migrate(database)
        yield database
    finally:
        await database.dispose()


def _direct(db: Database) -> SQLiteDirect:
    assert db.direct is not None
    return db.direct


def _file(db: Database) -> Path:
    assert db.url.database is not None
    return Path(db.url.database)


def test_only_sqlite_files_get_the_direct_path(sqlite_url: str) -> None:
    assert Database(sqlite_url).direct is not None
    assert Database("sqlite+aiosqlite://").direct is None  # in memory: per connection
    assert Database(sqlite_url, sqlite_direct=False).direct is None
    assert Database("postgresql+asyncpg://u@localhost/x").direct is None


async def test_an_uncontended_transaction_commits_inline(lite: Database) -> None:
    direct = _direct(lite)
    runs = RunRepository(lite)
    run = await runs.create("w")
    await runs.checkpoint(run.id, "a", {"k": 1})
    assert (direct.inline_count, direct.worker_count) == (2, 0)
    async with Database(lite.url, sqlite_direct=False) as other:  # what the other path sees
        assert (await RunRepository(other).load_state(run.id)).state == {"k": 1}


async def test_a_held_lock_moves_the_write_to_the_worker_and_the_loop_runs_on(
    lite: Database,
) -> None:
    runs = RunRepository(lite)
    run = await runs.create("w")
    blocker = sqlite3.connect(_file(lite), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process is writing
    try:
        write = asyncio.create_task(runs.checkpoint(run.id, "a", {"k": 1}))
        ticks = 0
        for _ in range(20):  # the loop is not blocked while the write waits
            await asyncio.sleep(0.005)
            ticks += 1
        assert ticks == 20 and not write.done()
        assert _direct(lite).worker_count == 1
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    result = await write
    assert result.checkpoint.seq == 1
    assert (await runs.load_state(run.id)).state == {"k": 1}
    await runs.checkpoint(run.id, "b", {"k": 2})  # and the next one is inline again
    assert _direct(lite).inline_count == 3


async def test_errors_are_sqlalchemys_and_roll_back(lite: Database) -> None:
    direct = _direct(lite)
    runs = RunRepository(lite)
    await runs.create("w", run_id="run_1")
    with pytest.raises(IntegrityError, match="UNIQUE"):
        await runs.create("w", run_id="run_1")

    def insert_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE runs SET workflow = 'changed' WHERE id = 'run_1'")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await direct.write(insert_then_fail)
    assert (await runs.get("run_1")).workflow == "w"

    def bad_sql(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT nope FROM runs")

    with pytest.raises(OperationalError, match="no such column"):
        await direct.read(bad_sql)
    assert (await runs.get("run_1")).workflow == "w"  # the connection is still usable
    assert direct.worker_count == 0  # and a failure released it: nothing was handed off


async def test_wal_checkpoints_run_on_the_worker_thread(
    lite: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(arbor.store._sqlite_direct, "CHECKPOINT_EVERY", 5)
    direct = _direct(lite)
    threads: list[threading.Thread] = []
    real = direct._checkpoint_wal

    def spy() -> None:
        threads.append(threading.current_thread())
        real()

    monkeypatch.setattr(direct, "_checkpoint_wal", spy)
    runs = RunRepository(lite)
    run = await runs.create("w")
    for i in range(12):
        await runs.checkpoint(run.id, "n", {"i": i})
        # Let a checkpoint finish before the next is due (one still running is not doubled),
        # however long the disk and the thread pool take under load.
        async with asyncio.timeout(20):
            while direct._wal_job is not None and not direct._wal_job.done():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    # Inline commits never checkpoint themselves: that would wait on the disk on the loop.
    assert await direct.read(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()) == (0,)
    await direct.close()
    assert len(threads) == 2 and threading.main_thread() not in threads


async def test_close_and_use_again(lite: Database) -> None:
    runs = RunRepository(lite)
    run = await runs.create("w")
    await lite.dispose()
    await lite.dispose()  # twice is fine
    assert (await runs.get(run.id)).id == run.id  # connections reopen on demand
    assert _direct(lite).inline_count == 2


async def test_inline_transactions_still_give_other_tasks_a_turn(lite: Database) -> None:
    runs = RunRepository(lite)
    run = await runs.create("w")
    turns = 0
    stop = asyncio.Event()

    async def other() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    start = turns
    for i in range(10):  # nothing else here awaits: only the transactions can yield
        await runs.checkpoint(run.id, "n", {"i": i})
    assert turns - start >= 10
    assert _direct(lite).worker_count == 0
    stop.set()
    await task
