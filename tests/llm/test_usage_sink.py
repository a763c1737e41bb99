from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from arbor.core.config import Settings
from arbor.llm.setup import open_client
from arbor.llm.types import CallContext, ChatRequest, Message
from arbor.llm.usage import StoreUsageSink
from arbor.store import Database, UsageRecord, UsageRepository, migrate
from arbor.testing import FunctionModel


async def test_client_usage_lands_in_the_database(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, llm={"cache": {"enabled": False}})
    async with open_client(settings) as client:
        client._parts.models["test:a"] = FunctionModel(lambda r: "stored")
        for i in range(5):
            await client.complete(
                ChatRequest(
                    model="test:a",
                    messages=[Message.user(f"q{i}")],
                    context=CallContext(key_id="key_1"),
                )
            )
    async with Database(settings.effective_database_url) as db:
        repo = UsageRepository(db)
        rows = await repo.summary("key")
    assert [(r.group, r.requests) for r in rows] == [("key_1", 5)]


async def test_sink_keeps_records_when_a_write_fails(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    await migrate(db)
    repo = UsageRepository(db)
    sink = StoreUsageSink(repo, interval=0.01)
    real_add_many = repo.add_many
    failures = 0

    async def flaky(records: list[UsageRecord]) -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise OSError("disk briefly unavailable")
        await real_add_many(records)

    repo.add_many = flaky  # type: ignore[method-assign]
    for i in range(10):
        sink.record(UsageRecord(provider="test", model="a", input_tokens=i))
    async with asyncio.timeout(20):  # the background flush retries until the writes work
        while len(await repo.records(limit=100)) < 10:  # noqa: ASYNC110 - a database
            await asyncio.sleep(0.01)
    assert failures == 2
    await sink.aclose()
    assert len(await repo.records(limit=100)) == 10
    with pytest.raises(RuntimeError):
        sink.record(UsageRecord(provider="test", model="a"))
    await db.dispose()


async def test_a_flush_writes_only_what_was_pending_when_it_began(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    await migrate(db)
    repo = UsageRepository(db)
    sink = StoreUsageSink(repo, interval=3600, batch_size=10)
    real_add_many = repo.add_many
    batches: list[int] = []

    async def recording(records: list[UsageRecord]) -> None:
        batches.append(len(records))
        # traffic keeps arriving while the write is in flight
        sink.record(UsageRecord(provider="test", model="a"))
        await real_add_many(records)

    repo.add_many = recording  # type: ignore[method-assign]
    for _ in range(6):
        sink.record(UsageRecord(provider="test", model="a"))
    # Not chasing the records that arrive meanwhile (the old loop never ended here).
    assert await asyncio.wait_for(sink.flush(), 5) == 6
    assert batches == [6]
    repo.add_many = real_add_many  # type: ignore[method-assign]
    await sink.aclose()  # the one that arrived during the flush is written on close
    assert len(await repo.records(limit=100)) == 7
    await db.dispose()
