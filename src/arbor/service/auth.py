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

With ``ARBOR_REDIS_URL`` (:func:`arbor.llm.redis_backends.key_sharing`) every server sharing
the Redis shares these: the HTTP requests/min run on the Redis limiter (so N servers together
admit a key's rpm, not N times it), the LLM layer's rpm/tpm already do, and a key's spending
is published to Redis and loaded at each of its requests, so a budget spent through one
server is refused (402) by the others. Without Redis all of it stays in this process.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from sqlalchemy.exc import SQLAlchemyError

from arbor.core.config import ModelLimits
from arbor.core.errors import AuthError
from arbor.llm.client import LLMClient
from arbor.llm.ratelimit import InMemoryRateLimiter, RateLimiter, Reservation
from arbor.llm.redis_backends import KeySharing
from arbor.service.errors import ForbiddenError, RequestRateLimitedError
from arbor.store import KeyRecord, KeyRepository, UsageRepository
from arbor.store.keys import KeyScope

__all__ = ["Authenticator", "Principal", "RequestRateLimiter", "presented_key"]

log = structlog.get_logger("arbor.service.auth")

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
    """Requests per minute per key at the HTTP layer: the LLM layer's sliding-log limiter
    (in-process, or Redis shared by every server) under an ``http:`` key, asked to admit at
    once; the request that would be one too many is refused, saying when to come back."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def hit(self, key_id: str, rpm: int) -> None:
        got = await self.limiter.try_acquire(f"http:{key_id}", ModelLimits(rpm=rpm), 0)
        if not isinstance(got, Reservation):
            raise RequestRateLimitedError(
                f"API key {key_id} is limited to {rpm} requests/min; retry in {math.ceil(got)} s",
                retry_after=got,
            )


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
        sharing: KeySharing | None = None,
    ) -> None:
        """``sharing`` (default: in-process) is what the keys' limits and spending run on;
        ``limiter`` overrides its HTTP requests/min limiter."""
        self.keys = keys
        self.client = client
        self.usage = usage
        self.sharing = sharing or KeySharing(InMemoryRateLimiter(client.clock))
        self.limiter = limiter or RequestRateLimiter(self.sharing.limiter)
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
        if record.budget_usd is not None and self.sharing.budgets is not None:
            await self.sharing.budgets.pull(f"key:{record.id}")  # other servers' spending
        if record.rpm is not None:
            await self.limiter.hit(record.id, record.rpm)
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
            if self.sharing.budgets is not None:  # unless another server started it
                await self.sharing.budgets.seed(f"key:{key_id}", spent)
            else:
                self.client.budgets.seed(f"key:{key_id}", spent)
            self._seeded.add(key_id)
