"""The sliding-log rate limiter of :mod:`arbor.llm.ratelimit`, shared by every process through
Redis.

Same semantics as :class:`~arbor.llm.ratelimit.InMemoryRateLimiter` (exact per-minute log,
tokens reserved up front and trued up, AIMD after 429s), but the log lives in Redis and one
Lua script (run by EVALSHA) expires old entries, checks and reserves in a single atomic round
trip, so N processes together never admit more than the limit. The script reads the clock
from Redis (``TIME``): every process judges the window on the same clock, so clock skew
between machines cannot let two of them both count a request as expired.

Per limiter key, four Redis keys share one hash tag (so they live on one cluster slot):
``…:log`` a sorted set of reservation ids scored by admission time (µs), ``…:tok`` a hash of
their tokens, ``…:meta`` a hash with the tokens sum, the 429 hold, the AIMD factor, the time
of the last cut and what the upstream's headers said (quotas until its resets, caps), and
``…:pend`` the reservations not settled yet (requests in flight, from every process). All
expire a window after their last use.

Waiters in one process queue first-come first-served per key (one asyncio lock); the head
asks Redis again when the script says how long to wait, or sooner (``poll_interval``) since
another process's reconcile may free tokens early. A waiter cancelled while its script runs
gives back whatever the script may have reserved. A Redis that cannot be reached fails the
call with :class:`LimiterUnavailableError`: admitting without the shared log would break the
limit for every process. (A failed reconcile or penalize is only logged: the call it
follows already happened, and its entry ages out of the window anyway.)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from arbor.core.clock import Clock
from arbor.core.config import ModelLimits
from arbor.core.errors import ArborError
from arbor.llm._ratelimit_headers import Adaptation
from arbor.llm.ratelimit import SAME_RESET, WINDOW, RateLimiter, Reservation

__all__ = ["LimiterUnavailableError", "RedisRateLimiter", "RedisReservation"]

log = structlog.get_logger("arbor.llm.ratelimit")

_US = 1_000_000

# KEYS: log, tok, meta, pend. ARGV: rpm (-1 none), tpm (-1 none), tokens, member, window µs,
# logged.
# Returns {1, now_us} when admitted, {0, wait_us} otherwise.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens, window = tonumber(ARGV[3]), tonumber(ARGV[5])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - window)
if #expired > 0 then
  local freed = 0
  for _, m in ipairs(expired) do
    freed = freed + (tonumber(redis.call('HGET', KEYS[2], m)) or 0)
    redis.call('HDEL', KEYS[2], m)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
  -- never -0: Redis refuses "-0" as an integer (entries of 0 tokens, e.g. HTTP requests)
  if freed ~= 0 then redis.call('HINCRBY', KEYS[3], 'sum', -freed) end
end
local meta = redis.call(
  'HMGET', KEYS[3], 'sum', 'blocked', 'factor', 'cap_rpm', 'cap_tpm', 'rq', 'rq_until', 'tq',
  'tq_until')
local sum = tonumber(meta[1]) or 0
local factor = tonumber(meta[3]) or 1
local cap_rpm, cap_tpm = tonumber(meta[4]), tonumber(meta[5])
local wait = (tonumber(meta[2]) or 0) - now
-- the upstream's quotas until its resets (x-ratelimit-* headers)
local rq, rq_until = tonumber(meta[6]) or 0, tonumber(meta[7]) or 0
local tq, tq_until = tonumber(meta[8]) or 0, tonumber(meta[9]) or 0
if now < rq_until and rq <= 0 then wait = math.max(wait, rq_until - now) end
if now < tq_until and tq < tokens then wait = math.max(wait, tq_until - now) end
local count = redis.call('ZCARD', KEYS[1])
if rpm >= 0 then
  local allowed = math.max(1, math.floor(math.min(rpm * factor, cap_rpm or rpm)))
  if count >= allowed then
    local o = redis.call('ZRANGE', KEYS[1], count - allowed, count - allowed, 'WITHSCORES')
    wait = math.max(wait, tonumber(o[2]) + window - now, 1)
  end
end
if tpm >= 0 and sum > 0 then
  local excess = sum + tokens - math.max(1, math.floor(math.min(tpm * factor, cap_tpm or tpm)))
  if excess > 0 then
    local log = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    local freed, at = 0, tonumber(log[#log])
    for i = 1, #log, 2 do
      freed = freed + (tonumber(redis.call('HGET', KEYS[2], log[i])) or 0)
      if freed >= excess then at = tonumber(log[i + 1]); break end
    end
    wait = math.max(wait, at + window - now, 1)
  end
end
if wait > 0 then return {0, wait} end
if ARGV[6] == '1' then
  if now < rq_until then redis.call('HINCRBY', KEYS[3], 'rq', -1) end
  if now < tq_until and tokens > 0 then redis.call('HINCRBY', KEYS[3], 'tq', -tokens) end
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('ZADD', KEYS[4], now, ARGV[4])
  redis.call('HSET', KEYS[2], ARGV[4], tokens)
  redis.call('HINCRBY', KEYS[3], 'sum', tokens)
end
local ttl = math.ceil(window / 1000) + 1000
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
return {1, now}
"""

# KEYS: tok, meta, pend. ARGV: member, actual tokens, increase.
_RECONCILE = """
redis.call('ZREM', KEYS[3], ARGV[1])
local old = redis.call('HGET', KEYS[1], ARGV[1])
local actual = tonumber(ARGV[2])
if old then
  redis.call('HSET', KEYS[1], ARGV[1], actual)
  redis.call('HINCRBY', KEYS[2], 'sum', actual - tonumber(old))
end
if actual > 0 then
  local f = tonumber(redis.call('HGET', KEYS[2], 'factor') or '1')
  if f < 1 then
    redis.call('HSET', KEYS[2], 'factor', tostring(math.min(1, f + tonumber(ARGV[3]))))
  end
end
return 1
"""

# KEYS: log, tok, meta, pend. ARGV: member. Undoes an admission nobody received.
_RELEASE = """
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  local tok = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[3], 'sum', -tok)
end
return 1
"""

# KEYS: meta. ARGV: hold µs (0 none), max hold µs, decrease, floor, cut interval µs, ttl ms.
_PENALIZE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local hold = tonumber(ARGV[1])
if hold > 0 then
  local until_ = now + math.min(hold, tonumber(ARGV[2]))
  local cur = tonumber(redis.call('HGET', KEYS[1], 'blocked') or '0')
  if until_ > cur then redis.call('HSET', KEYS[1], 'blocked', until_) end
end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_cut') or '-1e18')
if now - last >= tonumber(ARGV[5]) then
  local f = tonumber(redis.call('HGET', KEYS[1], 'factor') or '1')
  f = math.max(tonumber(ARGV[4]), f * tonumber(ARGV[3]))
  redis.call('HSET', KEYS[1], 'factor', tostring(f), 'last_cut', now)
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]))
return 1
"""


# KEYS: meta, pend. ARGV: requests remaining (-1 none), their reset µs, tokens left (-1 none),
# their reset µs, max hold µs, cap rpm (-1 none), cap tpm (-1 none), ttl ms, same-window µs,
# window µs. The requests in flight besides the one answered (pend) take from what remains.
_ADAPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cap = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[10]))
local others = math.max(0, redis.call('ZCARD', KEYS[2]) - 1)
for i, f in ipairs({'rq', 'tq'}) do
  local left, reset = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  if i == 1 and left >= 0 then left = math.max(0, left - others) end
  if left >= 0 and reset > 0 then
    local new_until = now + math.min(reset, cap)
    local cur = redis.call('HMGET', KEYS[1], f, f .. '_until')
    local cur_left, cur_until = tonumber(cur[1]), tonumber(cur[2]) or 0
    -- the same upstream window (resets within ARGV[9] µs): the lower count wins
    if cur_left and now < cur_until and new_until <= cur_until + tonumber(ARGV[9]) then
      left = math.min(left, cur_left)
      new_until = math.max(new_until, cur_until)
    end
    redis.call('HSET', KEYS[1], f, left, f .. '_until', new_until)
  end
end
for i, f in ipairs({'cap_rpm', 'cap_tpm'}) do
  local value = tonumber(ARGV[5 + i])
  if value >= 0 then
    redis.call('HSET', KEYS[1], f, value)
  else
    redis.call('HDEL', KEYS[1], f)
  end
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[8]))
return 1
"""


class LimiterUnavailableError(ArborError):
    """The shared rate limiter's Redis did not answer; the call was not made."""

    kind = "limiter_unavailable"
    retriable = True


class RedisReservation(Reservation):
    """A reservation whose entry lives in Redis under ``member``; ``server_time`` is when
    Redis admitted it (seconds, Redis's clock)."""

    __slots__ = ("logged", "member", "server_time")

    def __init__(
        self, key: str, tokens: int, admitted_at: float, member: str, server_time: float
    ) -> None:
        super().__init__(key, tokens, admitted_at)
        self.member = member
        self.server_time = server_time
        self.logged = False


class RedisRateLimiter(RateLimiter):
    """Requests/min and tokens/min limits that hold across every process sharing ``redis``.

    The knobs mean what they mean for :class:`~arbor.llm.ratelimit.InMemoryRateLimiter`;
    ``window`` (seconds) exists so tests can observe whole windows quickly.
    """

    def __init__(
        self,
        redis: Redis,
        clock: Clock,
        *,
        prefix: str = "arbor:rl",
        window: float = WINDOW,
        decrease: float = 0.5,
        increase: float = 0.05,
        floor: float = 0.1,
        cut_interval: float = 1.0,
        max_hold: float = 60.0,
        poll_interval: float = 0.25,
    ) -> None:
        self._check_aimd(decrease, increase, floor)
        if window <= 0.0:
            raise ValueError("window must be positive")
        self._redis = redis
        self._clock = clock
        self._prefix = prefix
        self._window_us = int(window * _US)
        self._decrease = decrease
        self._increase = increase
        self._floor = floor
        self._cut_us = int(cut_interval * _US)
        self._max_hold_us = int(max_hold * _US)
        self._poll = poll_interval
        self._acquire = redis.register_script(_ACQUIRE)
        self._reconcile = redis.register_script(_RECONCILE)
        self._penalize = redis.register_script(_PENALIZE)
        self._release = redis.register_script(_RELEASE)
        self._adapt = redis.register_script(_ADAPT)
        self._queues: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def _keys(self, key: str) -> tuple[str, str, str, str]:
        base = f"{self._prefix}:{{{key}}}"
        return f"{base}:log", f"{base}:tok", f"{base}:meta", f"{base}:pend"

    async def acquire(self, key: str, limits: ModelLimits, tokens: int) -> Reservation:
        rpm, tpm = limits.rpm, limits.tpm
        self._check_request(key, tpm, tokens)
        logged = rpm is not None or tpm is not None
        if not logged:
            now = self._clock.monotonic()
            return RedisReservation(key, tokens, now, "", self._clock.time())
        lock, users = self._queues.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:  # first come, first served within this process
                return await self._admit(key, rpm, tpm, tokens)
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._queues[key]

    async def try_acquire(self, key: str, limits: ModelLimits, tokens: int) -> Reservation | float:
        rpm, tpm = limits.rpm, limits.tpm
        self._check_request(key, tpm, tokens)
        if rpm is None and tpm is None:
            return RedisReservation(key, tokens, self._clock.monotonic(), "", self._clock.time())
        return await self._try(key, rpm, tpm, tokens, uuid.uuid4().hex)

    async def _admit(
        self, key: str, rpm: int | None, tpm: int | None, tokens: int
    ) -> RedisReservation:
        member = uuid.uuid4().hex
        while True:
            got = await self._try(key, rpm, tpm, tokens, member)
            if isinstance(got, RedisReservation):
                return got
            await self._clock.sleep(min(got, self._poll) if tpm is not None else got)

    async def _try(
        self, key: str, rpm: int | None, tpm: int | None, tokens: int, member: str
    ) -> RedisReservation | float:
        """One round trip: the reservation, or seconds to wait (nothing reserved)."""
        args: list[str | int] = [
            -1 if rpm is None else rpm,
            -1 if tpm is None else tpm,
            tokens,
            member,
            self._window_us,
            1,
        ]
        keys = list(self._keys(key))
        try:
            ok, value = await self._acquire(keys=keys, args=args)
        except asyncio.CancelledError:
            with contextlib.suppress(RedisError, OSError):
                await asyncio.shield(self._release(keys=keys, args=[member]))
            raise
        except (RedisError, OSError) as exc:
            raise _unavailable(key, exc) from exc
        if int(ok) == 1:
            r = RedisReservation(key, tokens, self._clock.monotonic(), member, int(value) / _US)
            r.logged = True
            return r
        return max(int(value) / _US, 1e-6)

    async def reconcile(self, reservation: Reservation, actual_tokens: int) -> None:
        if reservation._settled:
            return
        reservation._settled = True
        actual = max(0, actual_tokens)
        reservation.tokens = actual
        if not isinstance(reservation, RedisReservation) or not reservation.logged:
            return
        _, tok, meta, pend = self._keys(reservation.key)
        try:
            await self._reconcile(
                keys=[tok, meta, pend], args=[reservation.member, actual, self._increase]
            )
        except (RedisError, OSError) as exc:  # the call is done: its entry ages out instead
            log.warning("llm.ratelimit.redis_reconcile_failed", key=reservation.key, error=str(exc))

    async def penalize(self, key: str, retry_after: float | None) -> None:
        hold = 0 if retry_after is None or retry_after <= 0.0 else math.ceil(retry_after * _US)
        ttl_ms = (max(hold, self._window_us) // 1000) + 1000
        args: list[float] = [
            hold,
            self._max_hold_us,
            self._decrease,
            self._floor,
            self._cut_us,
            ttl_ms,
        ]
        try:
            await self._penalize(keys=[self._keys(key)[2]], args=args)
        except (RedisError, OSError) as exc:  # never hide the 429 that brought us here
            log.warning("llm.ratelimit.redis_penalize_failed", key=key, error=str(exc))

    async def adapt(self, key: str, adaptation: Adaptation) -> None:
        a = adaptation
        resets = [r for r in (a.requests_reset, a.tokens_reset) if r]
        ttl_ms = (max([self._window_us, *(math.ceil(r * _US) for r in resets)]) // 1000) + 1000
        args: list[int] = [
            -1 if a.requests_left is None else a.requests_left,
            math.ceil((a.requests_reset or 0.0) * _US),
            -1 if a.tokens_left is None else a.tokens_left,
            math.ceil((a.tokens_reset or 0.0) * _US),
            self._max_hold_us,
            -1 if a.cap_rpm is None else a.cap_rpm,
            -1 if a.cap_tpm is None else a.cap_tpm,
            ttl_ms,
            int(SAME_RESET * _US),
            self._window_us,
        ]
        try:
            await self._adapt(keys=list(self._keys(key)[2:]), args=args)
        except (RedisError, OSError) as exc:  # advice only: the limits still hold without it
            log.warning("llm.ratelimit.redis_adapt_failed", key=key, error=str(exc))

    # ---- introspection (tests, dashboards) ----------------------------------------------
    async def caps(self, key: str) -> tuple[float, float]:
        """The upstream's rpm and tpm caps in force for ``key`` (inf: none)."""
        rpm, tpm = await self._redis.hmget(self._keys(key)[2], ["cap_rpm", "cap_tpm"])
        return tuple(math.inf if v is None else float(v) for v in (rpm, tpm))  # type: ignore[return-value]

    async def usage(self, key: str) -> tuple[int, int]:
        """Requests and tokens logged under ``key`` (entries older than the window are
        dropped on the next acquire, so this may briefly over-count)."""
        log, _, meta, _ = self._keys(key)
        count = await self._redis.zcard(log)
        total = await self._redis.hget(meta, "sum")
        return int(count), int(total or 0)

    async def factor(self, key: str) -> float:
        """The AIMD share of the configured limits currently in force for ``key``."""
        value = await self._redis.hget(self._keys(key)[2], "factor")
        return 1.0 if value is None else float(value)


def _unavailable(key: str, exc: BaseException) -> LimiterUnavailableError:
    return LimiterUnavailableError(
        f"the shared rate limiter (Redis) did not answer for {key!r}: {type(exc).__name__}: {exc}"
    )
