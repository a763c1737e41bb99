"""Who is calling: an API key from ``Authorization: Bearer <key>`` (or ``x-api-key``).

The store is asked on every request by default (on SQLite a direct ``sqlite3`` read of tens
of microseconds), so revoking or rotating a key — through the API or ``arbor keys`` in another
process — applies to the very next request. ``service.key_cache_seconds`` lets a verified key
be trusted for a while instead (worth it when the store is a remote PostgreSQL): changes made
through this process's :class:`KeyRepository` still drop the cached entry at once, changes
from elsewhere apply within the cache time. Expiry is checked every time.

A verified key becomes a :class:`Principal`. Its limits are handed to the ``llm`` layer
(requests/min and tokens/min through :meth:`LLMClient.set_key_limits`, its USD budget as the
``key:<id>`` budget scope seeded with what the key already spent), so every LLM call made for
the request is limited there; the key's requests/min also limit HTTP requests here, answered
429 with ``Retry-After`` instead of queueing. Nothing about a refused value is ever echoed.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog
from sqlalchemy.exc import SQLAlchemyError

from arbor.core.config import ModelLimits
from arbor.core.errors import AuthError
from arbor.llm.client import LLMClient
from arbor.service.errors import ForbiddenError, RequestRateLimitedError
from arbor.store import KeyRecord, KeyRepository, UsageRepository
from arbor.store.keys import KeyScope

__all__ = ["Authenticator", "Principal", "RequestRateLimiter", "presented_key"]

log = structlog.get_logger("arbor.service.auth")

_WINDOW = 60.0
_MAX_HEADER = 1024  # longer than any key we issue or accept
_MAX_CACHED = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request: a verified API key."""

    key_id: str
    name: str
    #: Every scope the key grants, nesting applied (admin ⊇ run ⊇ read).
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def display_name(self) -> str:
        """How the key is named in records (approvals' "decided by")."""
        return self.name or self.key_id

    def require(self, scope: KeyScope) -> None:
        if scope not in self.scopes:
            raise ForbiddenError(f"API key {self.key_id} lacks the {scope!r} scope")


def presented_key(headers: Mapping[str, str]) -> str:
    """The key a request carries, or AuthError saying what is missing (never the value)."""
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError("invalid Authorization header: expected 'Bearer <API key>'")
        key = value.strip()
    else:
        key = headers.get("x-api-key", "").strip()
        if not key:
            raise AuthError("missing API key: send 'Authorization: Bearer <API key>'")
    if len(key) > _MAX_HEADER:
        raise AuthError("invalid API key")
    return key


class RequestRateLimiter:
    """Requests per minute per key at the HTTP layer: a sliding log that refuses (rather than
    queues) the request that would be one too many, and says when to come back."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._logs: dict[str, deque[float]] = {}

    def hit(self, key_id: str, rpm: int) -> None:
        now = self._clock()
        log_ = self._logs.get(key_id)
        if log_ is None:
            log_ = self._logs[key_id] = deque()
        while log_ and now - log_[0] >= _WINDOW:
            log_.popleft()
        if len(log_) >= rpm:
            wait = log_[len(log_) - rpm] + _WINDOW - now
            raise RequestRateLimitedError(
                f"API key {key_id} is limited to {rpm} requests/min; retry in "
                f"{math.ceil(wait)} s",
                retry_after=wait,
            )
        log_.append(now)


class Authenticator:
    """Turns a request's headers into a :class:`Principal` and applies the key's limits."""

    def __init__(
        self,
        keys: KeyRepository,
        client: LLMClient,
        usage: UsageRepository,
        *,
        limiter: RequestRateLimiter | None = None,
        cache_seconds: float = 0.0,
    ) -> None:
        self.keys = keys
        self.client = client
        self.usage = usage
        self.limiter = limiter or RequestRateLimiter(client.clock.monotonic)
        self._clock = client.clock.monotonic
        self._ttl = cache_seconds
        #: Verified keys by the presented value: (trusted until, record).
        self._verified: dict[str, tuple[float, KeyRecord]] = {}
        #: Bumped by every change, so a lookup that raced a change is not cached.
        self._generation = 0
        keys.subscribe(self.forget)
        self._applied: dict[str, tuple[int | None, int | None, float | None]] = {}
        self._seeded: set[str] = set()
        self._seed_lock = asyncio.Lock()

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        record = await self._verify(presented_key(headers))
        await self._apply_limits(record)
        if record.rpm is not None:
            self.limiter.hit(record.id, record.rpm)
        try:
            await self.keys.mark_used(record.id)
        except SQLAlchemyError as exc:  # bookkeeping only: never fail the request for it
            log.warning("keys.mark_used_failed", key_id=record.id, error=type(exc).__name__)
        return Principal(key_id=record.id, name=record.name, scopes=record.granted)

    def forget(self, key_id: str) -> None:
        """Drop cached verifications of ``key_id`` (it changed)."""
        self._generation += 1
        stale = [k for k, (_, r) in self._verified.items() if r.id == key_id]
        for presented in stale:
            del self._verified[presented]

    async def _verify(self, key: str) -> KeyRecord:
        cached = self._verified.get(key)
        now = self._clock()
        if cached is not None and cached[0] > now:
            record = cached[1]
            status = record.status()
            if status != "active":
                raise AuthError(f"API key {record.id} is {status}")
            return record
        generation = self._generation
        record = await self.keys.verify(key)
        if self._ttl > 0 and generation == self._generation:
            if cached is None and len(self._verified) >= _MAX_CACHED:
                self._verified.clear()  # only verified keys get here: a crude but safe bound
            self._verified[key] = (now + self._ttl, record)
        return record

    async def _apply_limits(self, record: KeyRecord) -> None:
        wanted = (record.rpm, record.tpm, record.budget_usd)
        if self._applied.get(record.id) == wanted:
            return
        if record.budget_usd is not None:
            await self._seed_spent(record.id)
        has_rate = record.rpm is not None or record.tpm is not None
        limits = ModelLimits(rpm=record.rpm, tpm=record.tpm) if has_rate else None
        self.client.set_key_limits(record.id, limits)
        self.client.budgets.set_limit(f"key:{record.id}", record.budget_usd)
        self._applied[record.id] = wanted

    async def _seed_spent(self, key_id: str) -> None:
        """Start the key's budget from what the store says it spent (once per process)."""
        async with self._seed_lock:
            if key_id in self._seeded:
                return
            spent = await self.usage.total_cost(key_id=key_id)
            self.client.budgets.seed(f"key:{key_id}", spent)
            self._seeded.add(key_id)
