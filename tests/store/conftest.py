"""Store fixtures: every database test runs on SQLite and, marked ``postgres``, PostgreSQL.

PostgreSQL tests each get a new, uniquely named database on the server named by
``ARBOR_TEST_POSTGRES_URL`` (dropped afterwards), so pytest-xdist workers never share state.
Without that variable they skip locally and fail when ``ARBOR_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from arbor.store import Database, database_url, migrate

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture
async def postgres_url(postgres_server_url: str) -> AsyncIterator[str]:
    """URL of a fresh, empty PostgreSQL database that lives for one test."""
    server = database_url(postgres_server_url)
    name = f"arbor_t_{uuid.uuid4().hex[:20]}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        yield server.set(database=name).render_as_string(hide_password=False)
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in a directory that does not exist yet."""
    return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'arbor.db'}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database, never migrated: one per backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """A migrated database, disposed after the test."""
    database = Database(db_url)
    try:
        await migrate(database)
        yield database
    finally:
        await database.dispose()
