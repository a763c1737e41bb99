"""Even spacing of requests under a requests-per-minute limit, in front of the LLM limiter.

The LLM layer's :class:`~arbor.llm.ratelimit.InMemoryRateLimiter` guarantees that no 60 s
window holds more than ``rpm`` requests, but it admits them as fast as they come: a batch
of thousands starts with a burst of ``rpm`` requests in its first second. Providers (and
the mock upstream) often enforce the limit in short windows — ``rpm/60`` per second — so
such a burst is answered with a storm of 429s. A batch wants the opposite: saturate the
limit smoothly. :class:`PacedRateLimiter` hands out one admission slot every
``60 / (rpm · factor) · (1 + margin)`` seconds per key, then defers to the wrapped limiter
for everything else (the 60 s log, tokens per minute, the hold after a 429).

``factor`` is the wrapped limiter's AIMD share for the key (cut on each 429, grown back on
successes), so pacing slows down and recovers with it. The upstream's ``x-ratelimit-*``
headers reach :meth:`PacedRateLimiter.adapt`, which hands them to the wrapped limiter (its
quota until the upstream's reset) and paces a key capped at a lower rpm than configured by
that cap, lifted again when an answer no longer carries it. ``margin`` keeps a few percent of
headroom so request arrival jitter never puts ``rpm/60 + 1`` requests in one upstream
second. Slots are taken one waiter at a time and a stall of the event loop shifts the
schedule rather than releasing a burst. Every attempt, retries included, passes here,
because the LLM layer's attempt loop re-enters the limiter on each one.
"""

from __future__ import annotations

import asyncio

from arbor.core.clock import Clock
from arbor.core.config import ModelLimits
from arbor.llm._ratelimit_headers import Adaptation
from arbor.llm.ratelimit import InMemoryRateLimiter, RateLimiter, Reservation

__all__ = ["PacedRateLimiter"]

#: Seconds a slot may be taken late without shifting the schedule (timer overshoot).
_ABSORB = 0.005


class PacedRateLimiter(RateLimiter):
    """``inner`` with requests of an rpm-limited key spread evenly over the minute."""

    def __init__(
        self, inner: RateLimiter, clock: Clock, *, margin: float = 0.03, share: float = 1.0
    ) -> None:
        if not 0.0 <= margin < 1.0:
            raise ValueError("margin must be within [0, 1)")
        if not 0.0 < share <= 1.0:
            raise ValueError("share must be within (0, 1]")
        #: This process's part of the rate when several pace one batch (Ray actors).
        self.share = share
        self.inner = inner
        self._clock = clock
        self._margin = margin
        self._next: dict[str, float] = {}
        #: Slots taken before this time are void (a 429 or a quota hold restarted the pace).
        self._void_before: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._cap_rpm: dict[str, int] = {}  # the upstream's rpm where below the configured

    def interval(self, key: str, rpm: int) -> float:
        """Seconds between two admissions under ``key`` right now: ``rpm``, or the
        upstream's lower cap for the key, times the wrapped limiter's AIMD share."""
        cap = self._cap_rpm.get(key)
        if cap is not None:
            rpm = min(rpm, max(1, cap))
        factor = self.inner.factor(key) if isinstance(self.inner, InMemoryRateLimiter) else 1.0
        return 60.0 / (rpm * factor * self.share) * (1.0 + self._margin)

    async def acquire(self, key: str, limits: ModelLimits, tokens: int) -> Reservation:
        if limits.rpm is None:
            return await self.inner.acquire(key, limits, tokens)
        taken = await self._take_slot(key, limits.rpm)
        reservation = await self.inner.acquire(key, limits, tokens)
        # A 429 or a quota hold voids the slots handed out before the schedule's restart
        # (they would all fire the moment the hold ends): queue again behind it. Slots
        # taken after the restart stand; voiding those too made every waiter queued behind
        # a hold take two slots (half the rate, seen in the rpm-saturation test).
        while taken < self._void_before.get(key, float("-inf")):
            try:
                taken = await self._take_slot(key, limits.rpm)
            except BaseException:
                await self.inner.reconcile(reservation, 0)
                raise
        return reservation

    async def _take_slot(self, key: str, rpm: int) -> float:
        """Wait for the key's next slot, one waiter at a time (FIFO); returns when it was
        taken (the clock's monotonic time). A waiter woken late
        (the loop was busy) moves the schedule with it instead of letting the ones behind
        catch up in a burst; lateness under ``_ABSORB`` is absorbed so timer overshoot does
        not slow the pace."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            now = self._clock.monotonic()
            slot = max(now, self._next.get(key, now))
            if slot > now:
                await self._clock.sleep(slot - now)
            woke = self._clock.monotonic()
            interval = self.interval(key, rpm)
            # max(): a 429 while this waiter slept may have pushed the schedule further.
            ahead = max(slot, woke - _ABSORB) + interval
            self._next[key] = max(self._next.get(key, ahead), ahead)
            return woke

    async def reconcile(self, reservation: Reservation, actual_tokens: int) -> None:
        await self.inner.reconcile(reservation, actual_tokens)

    async def penalize(self, key: str, retry_after: float | None) -> None:
        await self.inner.penalize(key, retry_after)
        hold = retry_after if retry_after is not None and retry_after > 0 else 0.0
        self._restart(key, self._clock.monotonic() + hold, force=True)

    async def adapt(self, key: str, adaptation: Adaptation) -> None:
        await self.inner.adapt(key, adaptation)
        hold = adaptation.hold
        if hold is not None:
            # Nothing left until the upstream's reset: as after a 429 (without its slow-down),
            # the schedule restarts at the reset and slots taken before it queue again.
            # Otherwise every waiter paced during the hold fires the moment it ends, fills
            # the upstream's next window at once and runs into the next hold (seen in
            # `arbor bench batch`: holds of 0.8-0.96 s each second, then 429s).
            self._restart(key, self._clock.monotonic() + hold)
        if adaptation.cap_rpm is None:
            self._cap_rpm.pop(key, None)
        else:
            self._cap_rpm[key] = adaptation.cap_rpm

    def _restart(self, key: str, at: float, *, force: bool = False) -> None:
        """The pace of ``key`` starts again at ``at``; slots taken before then are void.
        ``force`` (a 429) moves the schedule there even if it was already later."""
        self._next[key] = at if force else max(self._next.get(key, at), at)
        self._void_before[key] = max(self._void_before.get(key, at), at)
