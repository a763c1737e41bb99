"""Store tests use the database fixtures of ``tests/conftest.py`` (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from arbor.store import Database


@pytest.fixture
async def session_db(db: Database) -> AsyncIterator[Database]:
    """The ``db`` database with every transaction on SQLAlchemy sessions: on SQLite the
    direct path is off, so tests of the session path's internals run on both backends."""
    database = Database(db.url, sqlite_direct=False)
    assert database.direct is None
    try:
        yield database
    finally:
        await database.dispose()
