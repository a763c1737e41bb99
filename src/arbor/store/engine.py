"""Database connections: one async engine, SQLite by default, PostgreSQL by URL.

``ARBOR_DATABASE_URL`` may name a sync driver out of habit (``sqlite:///…``,
``postgresql://…``); it is mapped to the async driver Arbor uses (aiosqlite, asyncpg).
Anything else is a :class:`~arbor.core.errors.ConfigError` that names the variable and
never shows the password.

SQLite is made fit for a server process on every connection: WAL journal (readers do not
block the writer), foreign keys on, and a busy timeout so concurrent writers wait for the
lock instead of failing. The driver's implicit transaction handling is switched off and
Arbor emits ``BEGIN`` itself, so a transaction covers its reads as well as its writes and
DDL is transactional; ``Database.session(write=True)`` starts with ``BEGIN IMMEDIATE`` so a
read-then-write transaction never fails half way with "database is locked".

A SQLite file also gets ``Database.direct``: the hot write path of workflow runs (create,
checkpoint, events, status) runs there as one ``sqlite3`` call per transaction instead of a
driver-thread round trip per statement (see :mod:`arbor.store._sqlite_direct`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from arbor.core.config import Settings
from arbor.core.errors import ConfigError
from arbor.store._sqlite_direct import SQLiteDirect

__all__ = ["SQLITE_BEGIN_OPTION", "Database", "create_engine", "database_url"]

VARIABLE = "ARBOR_DATABASE_URL"
#: Execution option naming how a SQLite transaction starts: "DEFERRED" (default),
#: "IMMEDIATE" (take the write lock now) or "EXCLUSIVE". Ignored by PostgreSQL.
SQLITE_BEGIN_OPTION = "arbor_sqlite_begin"
SQLITE_BUSY_TIMEOUT_MS = 30_000

_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
# Sync drivers people write by habit; the same database through the async driver.
_ACCEPTED_DRIVERS = {
    "sqlite": {"", "pysqlite", "aiosqlite"},
    "postgresql": {"", "asyncpg", "psycopg2", "psycopg"},
}
_BEGIN_MODES = {"DEFERRED", "IMMEDIATE", "EXCLUSIVE"}


def database_url(url: str | URL) -> URL:
    """``url`` parsed and mapped to its async driver, or a ConfigError naming the variable."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"invalid {VARIABLE} {_mask(str(url))!r}: not a database URL; expected "
            "sqlite+aiosqlite:///path/to/arbor.db or postgresql+asyncpg://user:pass@host/db",
            variable=VARIABLE,
        ) from None
    backend = "postgresql" if parsed.get_backend_name() == "postgres" else parsed.get_backend_name()
    driver = parsed.get_driver_name() if "+" in parsed.drivername else ""
    shown = _mask(parsed.render_as_string(hide_password=True))
    if backend not in _ACCEPTED_DRIVERS:
        raise ConfigError(
            f"invalid {VARIABLE} {shown!r}: unsupported database {backend!r}; "
            "use sqlite+aiosqlite:// or postgresql+asyncpg://",
            variable=VARIABLE,
        )
    if driver not in _ACCEPTED_DRIVERS[backend]:
        raise ConfigError(
            f"invalid {VARIABLE} {shown!r}: unsupported driver {driver!r}; "
            f"use {backend}+{_ASYNC_DRIVERS[backend]}://",
            variable=VARIABLE,
        )
    return parsed.set(drivername=f"{backend}+{_ASYNC_DRIVERS[backend]}")


def create_engine(
    url: str | URL,
    *,
    echo: bool = False,
    pool_size: int = 10,
    max_overflow: int = 20,
) -> AsyncEngine:
    """An async engine for ``url``; ``pool_size``/``max_overflow`` apply to PostgreSQL."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        _ensure_sqlite_dir(parsed)
        engine = _create_async_engine(parsed, echo=echo)
        _configure_sqlite(engine)
        return engine
    return _create_async_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,  # a server restart or idle cut costs one retry, not an error
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": "arbor"}},
    )


class Database:
    """An engine and its session factories; pass one around, ``dispose()`` at shutdown.

    ``sqlite_direct=False`` keeps every transaction on SQLAlchemy (``direct`` is None), as
    it always is on PostgreSQL and in-memory SQLite.
    """

    def __init__(
        self, url_or_engine: str | URL | AsyncEngine, *, sqlite_direct: bool = True
    ) -> None:
        self.engine = (
            url_or_engine
            if isinstance(url_or_engine, AsyncEngine)
            else create_engine(url_or_engine)
        )
        file = _sqlite_file(self.engine.url) if self.dialect == "sqlite" else None
        #: Direct SQLite transactions for the hot paths, or None to use sessions.
        self.direct = (
            SQLiteDirect(file.expanduser(), busy_timeout_ms=SQLITE_BUSY_TIMEOUT_MS)
            if file is not None and sqlite_direct
            else None
        )
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        writer = self.engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        self._write_sessions = async_sessionmaker(writer, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(settings.effective_database_url)

    @property
    def url(self) -> URL:
        return self.engine.url

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back if it raises.

        ``write=True`` takes SQLite's write lock up front; use it when the transaction
        reads and then writes. It changes nothing on PostgreSQL.
        """
        maker = self._write_sessions if write else self._sessions
        async with maker.begin() as session:
            yield session

    async def dispose(self) -> None:
        """Close every pooled connection (and the direct SQLite ones)."""
        if self.direct is not None:
            await self.direct.close()
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()

    def __repr__(self) -> str:
        return f"Database({_mask(self.url.render_as_string(hide_password=True))!r})"


# ---- SQLite -----------------------------------------------------------------------------


def _sqlite_file(url: URL) -> Path | None:
    """The database file, or None for an in-memory or URI (``file:``) database."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def _ensure_sqlite_dir(url: URL) -> None:
    path = _sqlite_file(url)
    if path is None:
        return
    try:
        path.expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"invalid {VARIABLE}: cannot create the directory for {str(path)!r}: {exc.strerror}",
            variable=VARIABLE,
        ) from exc


def _configure_sqlite(engine: AsyncEngine) -> None:
    wal = _sqlite_file(engine.url) is not None  # in-memory databases have no WAL

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module; _on_begin emits BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough under WAL
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = str(conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")).upper()
        if mode not in _BEGIN_MODES:
            raise ValueError(f"{SQLITE_BEGIN_OPTION} must be one of {sorted(_BEGIN_MODES)}")
        conn.exec_driver_sql(f"BEGIN {mode}")


# ---- masking ----------------------------------------------------------------------------

# Greedy up to the last "@": an unencoded "@" or "/" inside a password stays hidden.
_USERINFO_PASSWORD = re.compile(r"(://[^:/?#@]*):.*@")
_QUERY_PASSWORD = re.compile(r"(password=)[^&]*", re.IGNORECASE)


def _mask(raw: str) -> str:
    """``raw`` with any password replaced by ``***``, for URLs SQLAlchemy cannot parse."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1:***@", raw))
