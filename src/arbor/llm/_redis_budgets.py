"""What API keys have spent, shared by every process through Redis.

Each process keeps its :class:`~arbor.llm.budgets.BudgetTracker` (reservations stay local
and synchronous on the call path); this adds one Redis counter per shared scope (``key:<id>``
by default), in integer nano-dollars:

- every spend a tracker commits in a shared scope is added to the counter
  (:attr:`BudgetTracker.on_spend`, sent in the background);
- :meth:`RedisBudgetSync.seed` starts the counter from what the store says was spent, unless
  another process already did (``SET NX``): the counter, once there, is the truth;
- :meth:`RedisBudgetSync.pull` loads the counter into this process's tracker; the service
  calls it when a key with a budget is authenticated, so spending on one server is refused
  on the next (402) as soon as the other has sent it.

Processes can still jointly overshoot by what they reserve at the same moment (each checks
its own reservations against the shared spending), as a single process does by its estimates'
errors. A Redis that cannot be reached only logs: the local tracker keeps limiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from arbor.llm.budgets import BudgetTracker

__all__ = ["RedisBudgetSync"]

log = structlog.get_logger("arbor.llm.budgets")

_NANO = 1_000_000_000
# KEYS: counter. ARGV: nano-dollars. Only a seeded counter counts (else the store's total,
# seeded later, would miss what was added before it).
_ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return false
"""


class RedisBudgetSync:
    """Publishes ``tracker``'s spending in scopes starting with one of ``shared`` to Redis
    and loads other processes' spending back on :meth:`pull`."""

    def __init__(
        self,
        redis: Redis,
        tracker: BudgetTracker,
        *,
        prefix: str = "arbor:budget",
        shared: Sequence[str] = ("key:",),
    ) -> None:
        self._redis = redis
        self._tracker = tracker
        self._prefix = prefix
        self._shared = tuple(shared)
        self._add = redis.register_script(_ADD)
        self._pending: set[asyncio.Task[None]] = set()
        tracker.on_spend = self._spent

    def _key(self, scope: str) -> str:
        return f"{self._prefix}:{{{scope}}}:spent"

    async def seed(self, scope: str, spent_usd: float) -> None:
        """Start the shared counter at ``spent_usd`` unless it exists, then :meth:`pull`."""
        try:
            await self._redis.set(self._key(scope), round(spent_usd * _NANO), nx=True)
        except (RedisError, OSError) as exc:
            log.warning("llm.budgets.redis_seed_failed", scope=scope, error=str(exc))
            self._tracker.seed(scope, spent_usd)
            return
        await self.pull(scope)

    async def pull(self, scope: str) -> None:
        """This process's tracker now counts what every process spent in ``scope``."""
        try:
            value = await self._redis.get(self._key(scope))
        except (RedisError, OSError) as exc:
            log.warning("llm.budgets.redis_pull_failed", scope=scope, error=str(exc))
            return
        if value is not None:
            self._tracker.seed(scope, int(value) / _NANO)

    async def spent(self, scope: str) -> float | None:
        """The shared counter of ``scope`` in USD (None: not seeded)."""
        value = await self._redis.get(self._key(scope))
        return None if value is None else int(value) / _NANO

    def _spent(self, scopes: tuple[str, ...], usd: float) -> None:
        shared = [s for s in scopes if s.startswith(self._shared)]
        if not shared:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # committed outside the event loop: nothing to send it with
            log.warning("llm.budgets.redis_spend_dropped", scopes=shared)
            return
        task = loop.create_task(self._send(shared, round(usd * _NANO)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, scopes: list[str], nano: int) -> None:
        for scope in scopes:
            try:
                await self._add(keys=[self._key(scope)], args=[nano])
            except (RedisError, OSError) as exc:
                log.warning("llm.budgets.redis_spend_failed", scope=scope, error=str(exc))

    async def flush(self) -> None:
        """Wait until every spend committed so far was sent."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        await self.flush()
        if self._tracker.on_spend == self._spent:
            self._tracker.on_spend = None
