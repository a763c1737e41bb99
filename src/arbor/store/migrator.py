"""Schema migrations: Alembic scripts shipped inside the package, run from code.

Users never see an ``alembic.ini``: :func:`alembic_config` builds the configuration with
``script_location`` pointing at ``arbor/store/migrations``. :func:`migrate` upgrades a
database to head in one transaction and is safe to call from every process at start-up:

- PostgreSQL: the transaction first takes an advisory lock, so concurrent callers queue and
  the later ones find the schema already at head (DDL is transactional there).
- SQLite: the transaction starts with ``BEGIN IMMEDIATE``, which holds the database's single
  write lock for the same purpose; other callers wait up to the busy timeout.

Alembic keeps its running context in module globals, so migrations of several databases in
one process are serialised by an in-process lock as well.

Writing a new migration (``0002_agents`` after adding tables to ``tables.py``), then
``ruff format`` and review the generated file::

    import asyncio
    from alembic import command
    from arbor.store import alembic_config, migrate

    url = "sqlite:////tmp/arbor-dev.db"
    asyncio.run(migrate(url))  # the scratch database at the current head
    command.revision(alembic_config(url), message="agents", autogenerate=True, rev_id="0002")
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from arbor.store.engine import SQLITE_BEGIN_OPTION, Database, create_engine

if TYPE_CHECKING:  # alembic costs ~0.4 s to import; only migrating pays for it
    from alembic.config import Config

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "migrate"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Key of the PostgreSQL advisory lock held while migrating (``arbor`` in ASCII, then 01).
ADVISORY_LOCK_KEY = 0x6172626F7201

_loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic configuration for Arbor's migrations, with no ini file on disk.

    ``url`` is only needed for Alembic commands run without a connection
    (``command.revision(..., autogenerate=True)``, ``command.check``); :func:`migrate`
    passes its own connection instead.
    """
    from alembic.config import Config

    # Alembic's default stdout is whatever sys.stdout was when it was imported.
    cfg = Config(stdout=sys.stdout)
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest migration shipped with this version of Arbor."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


async def current_revision(target: str | URL | Database | AsyncEngine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    engine, owned = _engine_of(target)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_current_revision)
    finally:
        if owned:
            await engine.dispose()


async def migrate(target: str | URL | Database | AsyncEngine) -> str:
    """Upgrade the database to head; returns the head revision. Idempotent.

    Given a URL, a temporary engine is created and disposed; given a :class:`Database` or
    an engine, its pool is used and left open.
    """
    engine, owned = _engine_of(target)
    try:
        async with _process_lock():
            async with engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    await conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
                async with conn.begin():
                    if conn.dialect.name == "postgresql":
                        # Released by the commit (or rollback) of this transaction.
                        await conn.execute(
                            text("SELECT pg_advisory_xact_lock(:key)"),
                            {"key": ADVISORY_LOCK_KEY},
                        )
                    return await conn.run_sync(_upgrade_to_head)
    finally:
        if owned:
            await engine.dispose()


def _engine_of(target: str | URL | Database | AsyncEngine) -> tuple[AsyncEngine, bool]:
    """The engine to use and whether this call owns (and must dispose) it."""
    if isinstance(target, Database):
        return target.engine, False
    if isinstance(target, AsyncEngine):
        return target, False
    return create_engine(target), True


def _process_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _loop_locks.get(loop)
    if lock is None:
        lock = _loop_locks[loop] = asyncio.Lock()
    return lock


def _upgrade_to_head(connection: Connection) -> str:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
    revision = _current_revision(connection)
    if revision is None:  # pragma: no cover - upgrade either stamps a revision or raises
        raise RuntimeError("migration finished without a revision")
    return revision


def _current_revision(connection: Connection) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
