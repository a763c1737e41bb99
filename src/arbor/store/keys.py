"""API keys: created once, stored only as a SHA-256 hash, checked in constant time.

A key reads ``arb_<prefix>_<secret>``: ``prefix`` (12 lowercase base-36 characters) is a
non-secret handle, unique in the table, shown in lists so people can tell keys apart;
``secret`` is 32 random bytes (URL-safe base64). The row keeps ``sha256(key)``. A random
256-bit key cannot be brute-forced, so a fast hash is right (bcrypt/argon2 protect
low-entropy passwords and would cost milliseconds on every request).

Checking a presented key: parse it strictly (anything else is refused before any SQL runs),
fetch the one row with that prefix by a bound parameter, compare hashes with
:func:`hmac.compare_digest`. Revoking or rotating changes the row, so the next request
already sees it — nothing is cached here. On a SQLite file the lookup is one ``sqlite3``
read on :attr:`Database.direct` (tens of microseconds, no driver-thread round trip), since
it runs on every request.

``last_used_at`` is written at most once per ``touch_interval`` per key and process, so a
busy key costs no write per request. Callers that cache verified keys :meth:`subscribe` to
changes (update, revoke, rotate) made through the repository.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from arbor.core.errors import ArborError, AuthError, NotFoundError
from arbor.core.ids import new_id
from arbor.store._util import aware, utcnow
from arbor.store.engine import Database
from arbor.store.tables import ApiKeyRow

__all__ = [
    "KEY_PREFIX",
    "SCOPES",
    "KeyRecord",
    "KeyRepository",
    "KeyRevokedError",
    "KeyScope",
    "KeyStatus",
    "NewKey",
    "hash_key",
    "implied_scopes",
]

KeyScope = Literal["read", "run", "admin"]
KeyStatus = Literal["active", "expired", "revoked"]

#: Scopes from narrowest to widest; each one implies those before it.
SCOPES: tuple[KeyScope, ...] = ("read", "run", "admin")
KEY_PREFIX = "arb_"
_HANDLE_LEN = 12
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_KEY_RE = re.compile(r"arb_([0-9a-z]{12})_[A-Za-z0-9_-]{43}")
#: A bootstrap key (ARBOR_ADMIN_KEY) may be any printable ASCII token in this range.
_FOREIGN_RE = re.compile(r"[!-~]{32,512}")
_BOOTSTRAP_NAME = "bootstrap-admin"


def hash_key(key: str) -> str:
    """Hex SHA-256 of the whole key."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def implied_scopes(scopes: Iterable[str]) -> frozenset[KeyScope]:
    """Every scope ``scopes`` grant: admin ⊇ run ⊇ read."""
    widest = max((i for i, s in enumerate(SCOPES) if s in set(scopes)), default=-1)
    return frozenset(SCOPES[: widest + 1])


def _handle(key: str) -> str | None:
    """The lookup handle of a well-formed key, or None (refuse without touching the db)."""
    if len(key) > 600:
        return None
    found = _KEY_RE.fullmatch(key)
    if found is not None:
        return found.group(1)
    if _FOREIGN_RE.fullmatch(key):  # an operator-chosen bootstrap key
        return "b" + hash_key(key)[: _HANDLE_LEN - 1]
    return None


def _new_key() -> tuple[str, str]:
    handle = "".join(secrets.choice(_ALPHABET) for _ in range(_HANDLE_LEN))
    return f"{KEY_PREFIX}{handle}_{secrets.token_urlsafe(32)}", handle


class KeyRevokedError(ArborError):
    """The key is revoked, so it cannot be changed that way (rotated)."""

    kind = "conflict"


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRecord:
    """A stored key without its secret or hash: safe to show."""

    id: str
    name: str
    prefix: str
    scopes: tuple[KeyScope, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rpm: int | None
    tpm: int | None
    budget_usd: float | None

    def status(self, now: datetime | None = None) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"

    @property
    def granted(self) -> frozenset[KeyScope]:
        return implied_scopes(self.scopes)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created or rotated: ``key`` is shown once and stored nowhere."""

    record: KeyRecord
    key: str


class KeyRepository:
    """API keys by id and by presented key; each method is one transaction."""

    def __init__(self, db: Database, *, touch_interval: float = 60.0) -> None:
        self._db = db
        self._touch_interval = touch_interval
        self._touched: dict[str, float] = {}
        self._listeners: list[Callable[[str], None]] = []

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(key_id)`` after a key is updated, revoked or rotated here."""
        self._listeners.append(listener)

    def _changed(self, key_id: str) -> None:
        for listener in self._listeners:
            listener(key_id)

    async def create(
        self,
        name: str = "",
        *,
        scopes: Iterable[KeyScope] = ("run",),
        expires_at: datetime | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        budget_usd: float | None = None,
    ) -> NewKey:
        """A new key; the returned :class:`NewKey` holds the only copy of the secret."""
        granted = _check_scopes(scopes)
        _check_limits(rpm, tpm, budget_usd)
        for attempt in range(3):  # a handle clash (62 random bits) is retried, not reported
            key, handle = _new_key()
            row = self._new_row(name, handle, key, granted, expires_at, rpm, tpm, budget_usd)
            try:
                async with self._db.session() as session:
                    session.add(row)
            except IntegrityError:
                if attempt == 2:
                    raise
                continue
            break
        return NewKey(_record(row), key)

    @staticmethod
    def _new_row(
        name: str,
        handle: str,
        key: str,
        granted: tuple[KeyScope, ...],
        expires_at: datetime | None,
        rpm: int | None,
        tpm: int | None,
        budget_usd: float | None,
    ) -> ApiKeyRow:
        return ApiKeyRow(
            id=new_id("key"),
            name=name,
            prefix=handle,
            hash=hash_key(key),
            scopes=list(granted),
            created_at=utcnow(),
            expires_at=None if expires_at is None else aware("expires_at", expires_at),
            revoked_at=None,
            last_used_at=None,
            rpm=rpm,
            tpm=tpm,
            budget_usd=budget_usd,
        )

    async def ensure_bootstrap(self, key: str) -> KeyRecord:
        """Store ``key`` (from ARBOR_ADMIN_KEY) as an admin key unless it is there already;
        other bootstrap keys still active are revoked, so changing the variable replaces it.
        A bootstrap key revoked by an admin stays revoked."""
        handle = _handle(key)
        if handle is None:
            raise ValueError(
                "ARBOR_ADMIN_KEY must be a key made by `arbor keys create` or 32-512 "
                "printable ASCII characters without spaces"
            )
        digest = hash_key(key)
        now = utcnow()
        async with self._db.session(write=True) as session:
            row = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.prefix == handle))
            await session.execute(
                update(ApiKeyRow)
                .where(
                    ApiKeyRow.name == _BOOTSTRAP_NAME,
                    ApiKeyRow.revoked_at.is_(None),
                    ApiKeyRow.prefix != handle,
                )
                .values(revoked_at=now)
            )
            if row is None:
                row = ApiKeyRow(
                    id=new_id("key"),
                    name=_BOOTSTRAP_NAME,
                    prefix=handle,
                    hash=digest,
                    scopes=["admin"],
                    created_at=now,
                    expires_at=None,
                    revoked_at=None,
                    last_used_at=None,
                    rpm=None,
                    tpm=None,
                    budget_usd=None,
                )
                session.add(row)
            elif not hmac.compare_digest(row.hash, digest):
                raise ValueError("ARBOR_ADMIN_KEY collides with a stored key; choose another")
        return _record(row)

    async def verify(self, key: str) -> KeyRecord:
        """The record of an active key, or :class:`AuthError` (the message never contains
        the presented value)."""
        handle = _handle(key)
        found = None if handle is None else await self._by_handle(handle)
        stored = found[1] if found is not None else "0" * 64
        matches = hmac.compare_digest(stored, hash_key(key) if handle else "1" * 64)
        if found is None or not matches:
            raise AuthError("invalid API key")
        record = found[0]
        status = record.status()
        if status != "active":
            raise AuthError(f"API key {record.id} is {status}")
        return record

    async def _by_handle(self, handle: str) -> tuple[KeyRecord, str] | None:
        """The record and stored hash of the key with that prefix."""
        if (direct := self._db.direct) is not None:
            row = await direct.read(lambda conn: conn.execute(_BY_PREFIX, (handle,)).fetchone())
            return None if row is None else _from_sqlite(row)
        async with self._db.session() as session:
            found = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.prefix == handle))
        return None if found is None else (_record(found), found.hash)

    async def get(self, key_id: str) -> KeyRecord:
        async with self._db.session() as session:
            row = await session.get(ApiKeyRow, key_id)
        if row is None:
            raise NotFoundError(f"API key {key_id!r} not found")
        return _record(row)

    async def list(self, *, include_revoked: bool = True) -> builtins.list[KeyRecord]:
        """Every key, newest first."""
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at.desc(), ApiKeyRow.id.desc())
        if not include_revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        async with self._db.session() as session:
            rows = (await session.scalars(query)).all()
        return [_record(r) for r in rows]

    async def update(
        self,
        key_id: str,
        *,
        name: str | None = None,
        scopes: Iterable[KeyScope] | None = None,
        expires_at: datetime | None = None,
        clear_expiry: bool = False,
        rpm: int | None = None,
        tpm: int | None = None,
        budget_usd: float | None = None,
        clear: Iterable[Literal["rpm", "tpm", "budget_usd"]] = (),
    ) -> KeyRecord:
        """Change the given fields; ``clear`` names limits to remove."""
        _check_limits(rpm, tpm, budget_usd)
        async with self._db.session(write=True) as session:
            row = await session.get(ApiKeyRow, key_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"API key {key_id!r} not found")
            if name is not None:
                row.name = name
            if scopes is not None:
                row.scopes = list(_check_scopes(scopes))
            if expires_at is not None:
                row.expires_at = aware("expires_at", expires_at)
            elif clear_expiry:
                row.expires_at = None
            for field, value in (("rpm", rpm), ("tpm", tpm), ("budget_usd", budget_usd)):
                if value is not None:
                    setattr(row, field, value)
            for field in clear:
                setattr(row, field, None)
        self._changed(key_id)
        return _record(row)

    async def revoke(self, key_id: str) -> KeyRecord:
        """Refuse the key from the next request on; revoking twice keeps the first time."""
        async with self._db.session(write=True) as session:
            row = await session.get(ApiKeyRow, key_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"API key {key_id!r} not found")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
        self._changed(key_id)
        return _record(row)

    async def rotate(self, key_id: str) -> NewKey:
        """A new secret for the same key id (same scopes, limits and usage history); the
        old secret is refused from the next request on. Revoked keys cannot be rotated."""
        key, handle = _new_key()
        async with self._db.session(write=True) as session:
            row = await session.get(ApiKeyRow, key_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"API key {key_id!r} not found")
            if row.revoked_at is not None:
                raise KeyRevokedError(f"API key {key_id} is revoked; create a new one")
            row.prefix = handle
            row.hash = hash_key(key)
        self._changed(key_id)
        return NewKey(_record(row), key)

    async def mark_used(self, key_id: str, *, force: bool = False) -> bool:
        """Record a use; writes at most once per ``touch_interval`` per key. Returns whether
        it wrote."""
        now = time.monotonic()
        last = self._touched.get(key_id)
        if not force and last is not None and now - last < self._touch_interval:
            return False
        self._touched[key_id] = now
        async with self._db.session() as session:
            await session.execute(
                update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=utcnow())
            )
        return True


def _check_scopes(scopes: Iterable[str]) -> tuple[KeyScope, ...]:
    given = list(dict.fromkeys(scopes))
    bad = [s for s in given if s not in SCOPES]
    if bad or not given:
        raise ValueError(f"scopes must be a non-empty subset of {list(SCOPES)}, not {bad or []}")
    return tuple(s for s in SCOPES if s in given)


def _check_limits(rpm: int | None, tpm: int | None, budget_usd: float | None) -> None:
    if rpm is not None and rpm < 1:
        raise ValueError("rpm must be >= 1")
    if tpm is not None and tpm < 1:
        raise ValueError("tpm must be >= 1")
    if budget_usd is not None and not budget_usd >= 0:
        raise ValueError("budget_usd must be >= 0")


def _record(row: ApiKeyRow) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=_check_scopes(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        rpm=row.rpm,
        tpm=row.tpm,
        budget_usd=row.budget_usd,
    )


# ---- the direct SQLite read: values as the tables store them on SQLite ------------------------
_BY_PREFIX = (
    "SELECT id, name, prefix, hash, scopes, created_at, expires_at, revoked_at, last_used_at, "
    "rpm, tpm, budget_usd FROM api_keys WHERE prefix = ?"
)


def _from_sqlite(row: tuple[Any, ...]) -> tuple[KeyRecord, str]:
    def when(text: str | None) -> datetime | None:  # UTCDateTime: UTC wall time as text
        return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)

    created = when(row[5])
    assert created is not None
    record = KeyRecord(
        id=row[0],
        name=row[1],
        prefix=row[2],
        scopes=_check_scopes(json.loads(row[4])),
        created_at=created,
        expires_at=when(row[6]),
        revoked_at=when(row[7]),
        last_used_at=when(row[8]),
        rpm=row[9],
        tpm=row[10],
        budget_usd=row[11],
    )
    return record, str(row[3])
