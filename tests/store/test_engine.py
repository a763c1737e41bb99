from __future__ import annotations

import asyncio
import traceback
from dataclasses import fields
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from arbor.core.config import Settings
from arbor.core.errors import ConfigError
from arbor.store import Database, UsageRecord, UsageRepository, create_engine, database_url, migrate
from arbor.store.tables import UsageRow


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///data/arbor.db", "sqlite+aiosqlite:///data/arbor.db"),
        ("sqlite+pysqlite:////abs/arbor.db", "sqlite+aiosqlite:////abs/arbor.db"),
        ("sqlite+aiosqlite://", "sqlite+aiosqlite://"),
        ("postgresql://u:p@db:5432/arbor", "postgresql+asyncpg://u:***@db:5432/arbor"),
        ("postgres://u:p@db/arbor", "postgresql+asyncpg://u:***@db/arbor"),
        ("postgresql+psycopg2://u@db/arbor", "postgresql+asyncpg://u@db/arbor"),
        ("postgresql+asyncpg://u:p@db/arbor", "postgresql+asyncpg://u:***@db/arbor"),
    ],
)
def test_sync_urls_map_to_async_drivers(given: str, expected: str) -> None:
    assert database_url(given).render_as_string(hide_password=True) == expected


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "mysql://arbor:Sup3rSecret@db/arbor",
        "postgresql+pg8000://arbor:Sup3rSecret@db/arbor",
        "postgresql://arbor:Sup3rSecret@db:port/arbor",
        "postgresql://arbor:Sup3r@Secret@db:port/arbor",
        "oracle://arbor@db/arbor?password=Sup3rSecret",
        "sqlite+pysqlcipher:///x.db?password=Sup3rSecret",
    ],
)
def test_bad_url_names_the_variable_and_hides_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_engine(url)
    err = info.value
    assert err.variable == "ARBOR_DATABASE_URL"
    assert "ARBOR_DATABASE_URL" in str(err)
    assert "Secret" not in str(err)
    # Nor in a printed traceback (SQLAlchemy's own parse error quotes the whole URL).
    assert "Secret" not in "".join(traceback.format_exception(err))


def test_uncreatable_sqlite_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="ARBOR_DATABASE_URL"):
        create_engine(f"sqlite:///{blocker / 'sub' / 'arbor.db'}")


async def test_repr_hides_the_password() -> None:
    db = Database("postgresql://arbor:Sup3rSecret@127.0.0.1/arbor")
    try:
        assert "Sup3rSecret" not in repr(db)
        assert db.dialect == "postgresql"
    finally:
        await db.dispose()


async def test_default_settings_give_a_sqlite_file_under_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    async with Database.from_settings(settings) as db:
        assert db.dialect == "sqlite"
        await migrate(db)
    assert (tmp_path / "home" / "arbor.db").is_file()


async def test_connection_settings(db_url: str) -> None:
    async with Database(db_url) as db, db.engine.connect() as conn:
        if db.dialect == "sqlite":
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(text("PRAGMA foreign_keys")) == 1
            assert await conn.scalar(text("PRAGMA busy_timeout")) == 30_000
        else:
            assert db.engine.dialect.driver == "asyncpg"
            assert await conn.scalar(text("SHOW application_name")) == "arbor"


def _row(i: int) -> UsageRow:
    record = UsageRecord(provider="p", model="m", id=f"use_{i}", input_tokens=i)
    return UsageRow(**{f.name: getattr(record, f.name) for f in fields(record)})


async def _count(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(UsageRow)) or 0)


async def test_session_commits_on_success_and_rolls_back_on_error(db: Database) -> None:
    row = _row(1)
    async with db.session() as session:
        session.add(row)
    assert await _count(db) == 1
    with pytest.raises(RuntimeError, match="boom"):
        async with db.session() as session:
            await session.execute(text("DELETE FROM usage_records"))
            raise RuntimeError("boom")
    assert await _count(db) == 1
    assert row.input_tokens == 1  # expire_on_commit=False: still readable after commit


async def test_concurrent_read_then_write_transactions_all_succeed(db: Database) -> None:
    """Each transaction reads, yields to the others, then writes. On SQLite a deferred
    transaction would fail with "database is locked"; write sessions queue instead."""

    async def read_then_write(i: int) -> None:
        async with db.session(write=True) as session:
            await session.scalar(select(func.count()).select_from(UsageRow))
            await asyncio.sleep(0.01)
            session.add(_row(i))

    await asyncio.gather(*(read_then_write(i) for i in range(8)))
    assert await _count(db) == 8
    assert await UsageRepository(db).total_cost() == 0.0
