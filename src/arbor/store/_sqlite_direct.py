"""Direct SQLite transactions: a whole transaction is one Python function over a ``sqlite3``
connection, usually run without leaving the event loop.

Why: through SQLAlchemy and aiosqlite every statement is a round trip to a driver thread
(0.1-0.3 ms on a busy machine) and a workflow checkpoint is about eight of them, so a node
cost milliseconds. A transaction here is tens of microseconds of C: under WAL with
``synchronous=NORMAL`` a commit appends to the log without an fsync, so it does not wait on
the disk.

How it stays fair to the event loop:

- The loop's own connection has ``busy_timeout = 0``: ``BEGIN IMMEDIATE`` either takes the
  write lock at once or fails at once with SQLITE_BUSY. It never waits.
- On SQLITE_BUSY (another process or thread is writing) the transaction is rolled back and
  the same function runs again on a worker thread whose connection waits up to the busy
  timeout, so a slow writer elsewhere delays this one without freezing the loop.
- The one step of a commit that does wait on the disk, the WAL checkpoint, never runs on the
  loop: the loop's connection has ``wal_autocheckpoint = 0`` and every
  :data:`CHECKPOINT_EVERY` inline commits a PASSIVE checkpoint runs on the worker thread.
- Every transaction is still an await point: after an inline one the caller yields once
  (``sleep(0)``, a few microseconds), so a run whose nodes never await cannot hog the loop.

Durability is the same as on the SQLAlchemy path (same file, same WAL, same ``synchronous``):
a committed transaction survives the process being killed at any instant.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

__all__ = ["CHECKPOINT_EVERY", "SQLiteDirect"]

T = TypeVar("T")
#: Inline commits between two WAL checkpoints on the worker thread (SQLite's own default is
#: every 1000 pages; a checkpoint transaction writes a handful).
CHECKPOINT_EVERY = 200
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_log = logging.getLogger(__name__)


class _Busy(Exception):
    """The inline attempt could not get the lock without waiting."""


class SQLiteDirect:
    """Runs transactions on one SQLite file with ``sqlite3`` directly; owned by a Database.

    ``write`` starts with ``BEGIN IMMEDIATE`` (the write lock first, so a read-then-write
    transaction cannot fail half way); ``read`` with a deferred ``BEGIN`` (one snapshot).
    The function may run twice (inline, then on the worker after SQLITE_BUSY), each time in
    a fresh transaction, so it must not have effects outside the connection. sqlite3 errors
    come out as SQLAlchemy's (``IntegrityError``, ``OperationalError``), as on the other path.
    """

    def __init__(self, path: Path, *, busy_timeout_ms: int) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        #: Transactions committed on the loop, and those handed to the worker thread.
        self.inline_count = 0
        self.worker_count = 0
        self._inline: sqlite3.Connection | None = None
        self._inline_lock = threading.Lock()
        self._worker: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._since_checkpoint = 0
        self._wal_job: Future[None] | None = None

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(fn, "BEGIN IMMEDIATE")

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(fn, "BEGIN")

    async def close(self) -> None:
        """Close both connections; the next transaction opens them again."""
        if self._executor is None:
            return
        executor, self._executor = self._executor, None
        await asyncio.get_running_loop().run_in_executor(executor, self._close_worker)
        executor.shutdown(wait=True)
        with self._inline_lock:
            if self._inline is not None:
                self._inline.close()
                self._inline = None

    # ---- running one transaction ---------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T], begin: str) -> T:
        loop = asyncio.get_running_loop()
        if self._inline is None:
            await loop.run_in_executor(self._pool(), self._open_inline)
        if self._inline_lock.acquire(blocking=False):
            try:
                result = self._inline_attempt(fn, begin)
            except _Busy:
                busy = True
            else:
                busy = False
            finally:
                self._inline_lock.release()
            if not busy:
                self.inline_count += 1
                if begin != "BEGIN":
                    self._count_commit()
                await asyncio.sleep(0)  # a turn for the loop's other tasks
                return result
        self.worker_count += 1
        return await loop.run_in_executor(self._pool(), self._on_worker, fn, begin)

    def _inline_attempt(self, fn: Callable[[sqlite3.Connection], T], begin: str) -> T:
        conn = self._inline
        if conn is None:  # closed between the open above and now
            raise _Busy()
        return _transaction(conn, fn, begin, busy_to_worker=True)

    def _on_worker(self, fn: Callable[[sqlite3.Connection], T], begin: str) -> T:
        return _transaction(self._worker_connection(), fn, begin, busy_to_worker=False)

    # ---- connections and WAL checkpoints -------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="arbor-sqlite")
        return self._executor

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        # isolation_level=None: sqlite3 issues no BEGIN of its own; _run does.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        except sqlite3.Error as exc:
            conn.close()
            raise _translate(exc) from exc
        return conn

    def _open_inline(self) -> None:
        """Runs on the worker: opening may wait for a lock (switching to WAL)."""
        conn = self._connect(busy_timeout_ms=0)
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # see _count_commit
        with self._inline_lock:
            if self._inline is None:
                self._inline = conn
                return
        conn.close()

    def _worker_connection(self) -> sqlite3.Connection:
        if self._worker is None:
            self._worker = self._connect(self.busy_timeout_ms)
        return self._worker

    def _close_worker(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def _count_commit(self) -> None:
        self._since_checkpoint += 1
        if self._since_checkpoint < CHECKPOINT_EVERY:
            return
        if self._wal_job is not None and not self._wal_job.done():
            return
        self._since_checkpoint = 0
        self._wal_job = self._pool().submit(self._checkpoint_wal)

    def _checkpoint_wal(self) -> None:
        """Copy the WAL back into the database file so the log does not grow without end."""
        try:
            self._worker_connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except (sqlite3.Error, DBAPIError) as exc:  # the next one will try again
            _log.warning("sqlite WAL checkpoint failed: %s", exc)


def _transaction(
    conn: sqlite3.Connection,
    fn: Callable[[sqlite3.Connection], T],
    begin: str,
    *,
    busy_to_worker: bool,
) -> T:
    """``begin``, ``fn``, COMMIT on ``conn``; any failure rolls back so the connection is
    free again. With ``busy_to_worker`` (the inline attempt) a busy database raises _Busy, for
    the caller to retry on the worker, instead of the translated error."""
    try:
        conn.execute(begin)
        result = fn(conn)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        if busy_to_worker and _is_busy(exc):
            raise _Busy() from exc
        raise _translate(exc) from exc
    except BaseException:
        _rollback(conn)
        raise
    return result


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _BUSY_CODES


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _translate(exc: sqlite3.Error) -> BaseException:
    """The SQLAlchemy exception the same failure raises through a session."""
    return DBAPIError.instance(None, None, exc, sqlite3.Error)
