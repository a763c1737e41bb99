"""Requests-per-minute and tokens-per-minute limits, per caller-built key.

The in-process limiter keeps a *sliding log*: every admitted request of the last 60 s, with
the tokens it holds. A request is admitted at time ``t`` only if fewer than ``rpm`` logged
requests and at most ``tpm - tokens`` logged tokens are younger than 60 s. Why this and not
a token bucket: a bucket that starts full (``rpm``) and refills at ``rpm/60`` per second
admits up to ``2·rpm`` in the first minute; shrinking the burst to make that impossible
wastes throughput. The log is exact — proof: take any 60 s window and the last request
admitted in it; every earlier request in the window was younger than 60 s at that moment,
so it was counted, so the window holds at most ``rpm`` requests and ``tpm`` tokens. Memory
is one entry per request admitted in the last minute (at most ``rpm``).

Tokens are reserved up front (prompt + ``max_tokens``) and trued up by
:meth:`RateLimiter.reconcile`, which changes the entry in place: unused tokens come back at
once, extra ones are charged to the request's admission time. (Extra tokens cannot be
refused after the fact, so the guarantee holds for reservations that cover their calls.)

The upstream's ``x-ratelimit-*`` headers (:mod:`arbor.llm._ratelimit_headers`) reach
:meth:`RateLimiter.adapt`: until the upstream's reset a key admits no more requests and
tokens than the upstream says remain (none: it is held until the reset), and its effective
limits are capped at the upstream's when those are lower.

After an upstream 429, :meth:`RateLimiter.penalize` blocks the key until ``retry_after``
and cuts its effective limits multiplicatively; each successful reconcile (``actual_tokens
> 0``) adds a fixed share of the limit back — AIMD, as TCP does, so a fleet of clients
converges on what the upstream really allows.

Waiters are served first-come first-served per key: a large request at the head is never
starved by small ones behind it. Only the head polls the clock; the others wait on a future
and are handed the head position in order. A cancelled waiter leaves the queue and takes
nothing, because admission happens synchronously after its last ``await``.

Every method is ``async`` so the Redis backend (a Lua script over the same log, shared by
every process: :mod:`arbor.llm._redis_limiter`) drops in.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections import deque

from arbor.core.clock import Clock
from arbor.core.config import ModelLimits
from arbor.core.errors import ArborError
from arbor.llm._ratelimit_headers import Adaptation

__all__ = [
    "InMemoryRateLimiter",
    "RateLimiter",
    "Reservation",
    "TokenLimitError",
]

#: The window the per-minute limits apply to.
WINDOW = 60.0
#: Keys kept before idle ones are swept (the threshold then doubles with the live count).
_SWEEP_MIN = 1024
#: Shortest sleep: keeps a waiter from spinning on float rounding at the window edge.
_MIN_SLEEP = 1e-6


class TokenLimitError(ArborError):
    """One request needs more tokens than the key's whole per-minute budget: it could never
    be admitted, so it fails now instead of waiting forever."""

    kind = "token_limit"

    def __init__(self, message: str, *, key: str, tokens: int, tpm: int) -> None:
        super().__init__(message)
        self.key = key
        self.tokens = tokens
        self.tpm = tpm


class Reservation:
    """A request slot and ``tokens`` held under ``key`` since ``admitted_at`` (monotonic).

    Hand it back to :meth:`RateLimiter.reconcile` exactly once; later calls are ignored.
    """

    __slots__ = ("_in_log", "_settled", "admitted_at", "key", "tokens")

    def __init__(self, key: str, tokens: int, admitted_at: float) -> None:
        self.key = key
        self.tokens = tokens
        self.admitted_at = admitted_at
        self._in_log = False  # counted in its key's sliding window right now
        self._settled = False

    def __repr__(self) -> str:
        return f"Reservation(key={self.key!r}, tokens={self.tokens}, at={self.admitted_at})"


class RateLimiter(ABC):
    """Admission under requests/min and tokens/min limits, per key."""

    @abstractmethod
    async def acquire(self, key: str, limits: ModelLimits, tokens: int) -> Reservation:
        """Wait until one more request holding ``tokens`` fits ``limits`` under ``key``.

        Raises :class:`TokenLimitError` at once if ``tokens`` exceeds ``limits.tpm``.
        """

    @staticmethod
    def _check_aimd(decrease: float, increase: float, floor: float) -> None:
        """The AIMD settings every backend accepts: a cut keeps some share, the floor is a
        share of the limit, and recovery never lowers it."""
        if not (0.0 < decrease <= 1.0 and 0.0 < floor <= 1.0 and increase >= 0.0):
            raise ValueError("need 0 < decrease <= 1, 0 < floor <= 1 and increase >= 0")

    @staticmethod
    def _check_request(key: str, tpm: int | None, tokens: int) -> None:
        """Fail at once on a request no wait could admit; every backend shares it so they
        reject the same requests with the same error."""
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        if tpm is not None and tokens > tpm:
            raise TokenLimitError(
                f"a request of {tokens} tokens can never fit the limit of {tpm} tokens/min "
                f"for {key!r}: lower max_tokens or shorten the prompt, or raise the limit",
                key=key,
                tokens=tokens,
                tpm=tpm,
            )

    async def try_acquire(self, key: str, limits: ModelLimits, tokens: int) -> Reservation | float:
        """Admit one more request holding ``tokens`` now if it fits, else return how many
        seconds until it would (nothing is reserved then): for callers that refuse rather
        than queue, such as the HTTP layer's per-key requests/min. Backends that only know
        how to wait do not offer it."""
        raise NotImplementedError(f"{type(self).__name__} cannot admit without waiting")

    @abstractmethod
    async def reconcile(self, reservation: Reservation, actual_tokens: int) -> None:
        """Replace the reserved tokens with what the call really used (0 if it failed)."""

    @abstractmethod
    async def penalize(self, key: str, retry_after: float | None) -> None:
        """The upstream answered 429: hold the key for ``retry_after`` and slow it down."""

    async def adapt(self, key: str, adaptation: Adaptation) -> None:  # noqa: B027
        """Follow the upstream's rate-limit headers: admit at most ``requests_left``
        requests and ``tokens_left`` tokens under ``key`` until the upstream's resets, and
        cap its effective rpm/tpm at the upstream's (None lifts a cap). Backends that cannot
        do it ignore it (the 429 path still slows them down)."""


class _KeyState:
    __slots__ = (
        "blocked_until",
        "cap_rpm",
        "cap_tpm",
        "factor",
        "last_cut",
        "log",
        "pending",
        "req_left",
        "req_until",
        "tok_left",
        "tok_until",
        "tokens",
        "waiters",
    )

    def __init__(self) -> None:
        self.log: deque[Reservation] = deque()  # admitted in the last WINDOW, oldest first
        self.tokens = 0  # sum of tokens in the log
        self.pending = 0  # logged reservations not reconciled yet
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.blocked_until = -math.inf
        self.factor = 1.0  # AIMD share of the configured limits in force
        self.last_cut = -math.inf
        self.cap_rpm = math.inf  # the upstream's own limits, when lower than configured
        self.cap_tpm = math.inf
        # What the upstream says remains until its resets (monotonic times).
        self.req_left, self.req_until = 0, -math.inf
        self.tok_left, self.tok_until = 0, -math.inf

    def idle(self, now: float) -> bool:
        """Nothing to remember: a new key would start from this very state."""
        self.expire(now)
        return (
            not self.log
            and not self.pending
            and not self.waiters
            and self.factor >= 1.0
            and self.blocked_until <= now
        )

    def expire(self, now: float) -> None:
        log = self.log
        while log and now - log[0].admitted_at >= WINDOW:
            old = log.popleft()
            old._in_log = False
            self.tokens -= old.tokens
            if not old._settled:
                self.pending -= 1

    def wait_time(self, now: float, rpm: int | None, tpm: int | None, tokens: int) -> float:
        """Seconds until a request of ``tokens`` fits (0.0: it fits now)."""
        self.expire(now)
        wait = self.blocked_until - now
        if now < self.req_until and self.req_left <= 0:
            wait = max(wait, self.req_until - now)
        if now < self.tok_until and self.tok_left < tokens:
            wait = max(wait, self.tok_until - now)
        log = self.log
        if rpm is not None:
            allowed = max(1, int(min(rpm * self.factor, self.cap_rpm)))
            if len(log) >= allowed:
                oldest_to_go = log[len(log) - allowed]
                # At least _MIN_SLEEP: `t + 60 - now` can round to 0 while `now - t < 60`.
                wait = max(wait, oldest_to_go.admitted_at + WINDOW - now, _MIN_SLEEP)
        if tpm is not None and self.tokens > 0:
            allowed = max(1, int(min(tpm * self.factor, self.cap_tpm)))
            excess = self.tokens + tokens - allowed
            if excess > 0:
                wait = max(wait, self._tokens_free_at(excess) - now, _MIN_SLEEP)
        return wait if wait > 0.0 else 0.0

    def _tokens_free_at(self, excess: int) -> float:
        """When enough logged tokens have aged out; if that is never enough (the limit was
        cut below this request), when the window is empty: a request that fits the
        configured ``tpm`` is always admitted into an empty window."""
        freed = 0
        for r in self.log:
            freed += r.tokens
            if freed >= excess:
                return r.admitted_at + WINDOW
        return self.log[-1].admitted_at + WINDOW

    def admit(self, key: str, tokens: int, now: float, logged: bool) -> Reservation:
        r = Reservation(key, tokens, now)
        if logged:
            if now < self.req_until:
                self.req_left -= 1
            if now < self.tok_until:
                self.tok_left -= tokens
            r._in_log = True
            self.log.append(r)
            self.tokens += tokens
            self.pending += 1
        return r


class InMemoryRateLimiter(RateLimiter):
    """Sliding-log limiter for one process and one event loop.

    AIMD knobs: a 429 multiplies the effective limits by ``decrease`` (at most once per
    ``cut_interval`` seconds, so one burst of 429s counts once, never below ``floor``);
    each success adds ``increase`` of the configured limit back. A 429's hold is capped at
    ``max_hold`` seconds. While tokens are reserved but not reconciled, the head waiter
    re-checks every ``poll_interval`` seconds, because a reconcile may free tokens early.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        decrease: float = 0.5,
        increase: float = 0.05,
        floor: float = 0.1,
        cut_interval: float = 1.0,
        max_hold: float = 60.0,
        poll_interval: float = 0.25,
    ) -> None:
        self._check_aimd(decrease, increase, floor)
        self._clock = clock
        self._states: dict[str, _KeyState] = {}
        self._sweep_at = _SWEEP_MIN
        self._decrease = decrease
        self._increase = increase
        self._floor = floor
        self._cut_interval = cut_interval
        self._max_hold = max_hold
        self._poll = poll_interval

    def _state(self, key: str) -> _KeyState:
        st = self._states.get(key)
        if st is None:
            if len(self._states) >= self._sweep_at:
                self._sweep()
            st = self._states[key] = _KeyState()
        return st

    def _sweep(self) -> None:
        """Forget idle keys. Keys include model ids callers choose, so without this the
        table would grow with every id ever named; sweeping when it doubles keeps the cost
        amortised O(1) per new key."""
        now = self._clock.monotonic()
        for key in [k for k, st in self._states.items() if st.idle(now)]:
            del self._states[key]
        self._sweep_at = max(_SWEEP_MIN, 2 * len(self._states))

    async def acquire(self, key: str, limits: ModelLimits, tokens: int) -> Reservation:
        rpm, tpm = limits.rpm, limits.tpm
        self._check_request(key, tpm, tokens)
        st = self._state(key)
        logged = rpm is not None or tpm is not None
        now = self._clock.monotonic()
        if not st.waiters and st.wait_time(now, rpm, tpm, tokens) == 0.0:
            return st.admit(key, tokens, now, logged)
        return await self._wait(st, key, rpm, tpm, tokens, logged)

    async def try_acquire(self, key: str, limits: ModelLimits, tokens: int) -> Reservation | float:
        rpm, tpm = limits.rpm, limits.tpm
        self._check_request(key, tpm, tokens)
        st = self._state(key)
        now = self._clock.monotonic()
        wait = st.wait_time(now, rpm, tpm, tokens)
        if wait == 0.0 and st.waiters:  # queued callers come first
            wait = self._poll
        if wait > 0.0:
            return wait
        return st.admit(key, tokens, now, rpm is not None or tpm is not None)

    async def _wait(
        self,
        st: _KeyState,
        key: str,
        rpm: int | None,
        tpm: int | None,
        tokens: int,
        logged: bool,
    ) -> Reservation:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        st.waiters.append(turn)
        try:
            if st.waiters[0] is not turn:
                await turn  # the previous head hands over when it leaves
            while True:
                now = self._clock.monotonic()
                wait = st.wait_time(now, rpm, tpm, tokens)
                if wait == 0.0:
                    return st.admit(key, tokens, now, logged)
                if st.pending and now >= st.blocked_until:
                    wait = min(wait, self._poll)
                await self._clock.sleep(wait)
        finally:
            was_head = bool(st.waiters) and st.waiters[0] is turn
            st.waiters.remove(turn)
            if was_head and st.waiters and not st.waiters[0].done():
                st.waiters[0].set_result(None)

    async def reconcile(self, reservation: Reservation, actual_tokens: int) -> None:
        if reservation._settled:
            return
        reservation._settled = True
        actual = max(0, actual_tokens)
        st = self._states.get(reservation.key)
        if st is None:
            return
        if reservation._in_log:
            st.tokens += actual - reservation.tokens
            st.pending -= 1
        reservation.tokens = actual
        if actual > 0 and st.factor < 1.0:
            st.factor = min(1.0, st.factor + self._increase)

    async def penalize(self, key: str, retry_after: float | None) -> None:
        st = self._state(key)
        now = self._clock.monotonic()
        if retry_after is not None and retry_after > 0.0:
            st.blocked_until = max(st.blocked_until, now + min(retry_after, self._max_hold))
        if now - st.last_cut >= self._cut_interval:
            st.factor = max(self._floor, st.factor * self._decrease)
            st.last_cut = now

    async def adapt(self, key: str, adaptation: Adaptation) -> None:
        st = self._state(key)
        now = self._clock.monotonic()
        a = adaptation
        if a.requests_left is not None and a.requests_reset:
            until = now + min(a.requests_reset, self._max_hold)
            st.expire(now)
            left = max(0, a.requests_left - max(0, st.pending - 1))  # others in flight first
            st.req_left, st.req_until = _quota(st.req_left, st.req_until, left, until, now)
        if a.tokens_left is not None and a.tokens_reset:
            until = now + min(a.tokens_reset, self._max_hold)
            st.tok_left, st.tok_until = _quota(st.tok_left, st.tok_until, a.tokens_left, until, now)
        st.cap_rpm = math.inf if adaptation.cap_rpm is None else adaptation.cap_rpm
        st.cap_tpm = math.inf if adaptation.cap_tpm is None else adaptation.cap_tpm

    # ---- introspection (tests, dashboards) ----------------------------------------------
    def caps(self, key: str) -> tuple[float, float]:
        """The upstream's rpm and tpm caps in force for ``key`` (inf: none)."""
        st = self._states.get(key)
        return (math.inf, math.inf) if st is None else (st.cap_rpm, st.cap_tpm)

    def usage(self, key: str) -> tuple[int, int]:
        """Requests and tokens counted in ``key``'s current 60 s window."""
        st = self._states.get(key)
        if st is None:
            return 0, 0
        st.expire(self._clock.monotonic())
        return len(st.log), st.tokens

    def factor(self, key: str) -> float:
        """The AIMD share of the configured limits currently in force for ``key``."""
        st = self._states.get(key)
        return 1.0 if st is None else st.factor


#: Resets this close together name the same upstream window (answers of one window arrive
#: with slightly different "reset in" values).
SAME_RESET = 0.1


def _quota(
    left: int, until: float, new_left: int, new_until: float, now: float
) -> tuple[int, float]:
    """The quota after a new report: in the same upstream window the lower count wins
    (answers arrive out of order, and admissions since a report are not in it); a later
    window starts afresh."""
    if now < until and new_until <= until + SAME_RESET:
        return min(left, new_left), max(until, new_until)
    return new_left, new_until
