"""Suite-wide guards (no network beyond loopback; service-backed tests fail in CI) and the
database fixtures: every database test runs on SQLite and, marked ``postgres``, PostgreSQL.

PostgreSQL tests each get a new, uniquely named database on the server named by
``ARBOR_TEST_POSTGRES_URL`` (dropped afterwards), so pytest-xdist workers never share state.
Without that variable they skip locally and fail when ``ARBOR_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from arbor.store import Database, database_url, migrate
from arbor.testing.network import block_network

REQUIRE_SERVICES = os.environ.get("ARBOR_REQUIRE_SERVICES") == "1"


@pytest.fixture(autouse=True)
def _no_real_network() -> Iterator[None]:
    with block_network():
        yield


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Tests never read the developer's ARBOR_* settings, .env or arbor.toml."""
    for name in list(os.environ):
        if name.startswith("ARBOR_") and not name.startswith(("ARBOR_TEST_", "ARBOR_REQUIRE_")):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("arbor-home")
    monkeypatch.setenv("ARBOR_HOME", str(home))
    monkeypatch.setenv("ARBOR_CONFIG", str(home / "arbor.toml"))
    monkeypatch.chdir(home)


def require_service(env_var: str, what: str) -> str:
    """The URL of a service-backed test's server; fails in CI, skips locally when unset."""
    url = os.environ.get(env_var)
    if url:
        return url
    message = f"{what} is required: set {env_var} (make test starts it)"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
async def isolation() -> None:
    """The OS sandbox's isolation (root, Linux namespaces): tests that run generated code in
    it fail in CI and skip locally without it, never pass silently."""
    from arbor.runtime.sandbox import Sandbox

    problem = await Sandbox().isolation_problem()
    if problem is None:
        return
    message = f"OS sandbox isolation is required: {problem}"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """``postgresql+asyncpg://`` URL of a server where tests may create databases."""
    return require_service("ARBOR_TEST_POSTGRES_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    return require_service("ARBOR_TEST_REDIS_URL", "Redis")


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
