from __future__ import annotations

import asyncio
import itertools

import pytest

from arbor.core.clock import FakeClock
from arbor.core.config import ModelLimits
from arbor.llm._ratelimit_headers import Adaptation
from arbor.llm.ratelimit import InMemoryRateLimiter
from arbor.runtime.pacing import PacedRateLimiter


async def test_admissions_are_spread_evenly_over_the_minute() -> None:
    clock = FakeClock()
    paced = PacedRateLimiter(InMemoryRateLimiter(clock), clock, margin=0.0)
    limits = ModelLimits(rpm=600)  # one every 0.1 s
    start = clock.monotonic()
    times = []
    for _ in range(5):
        await paced.acquire("m", limits, 1)
        times.append(round(clock.monotonic() - start, 6))
    assert times == [0.0, 0.1, 0.2, 0.3, 0.4]


async def test_margin_and_unlimited_keys() -> None:
    clock = FakeClock()
    paced = PacedRateLimiter(InMemoryRateLimiter(clock), clock, margin=0.05)
    assert paced.interval("m", 60) == pytest.approx(1.05)
    start = clock.monotonic()
    for _ in range(10):
        await paced.acquire("free", ModelLimits(), 1)
    assert clock.monotonic() == start  # no rpm: no pacing
    with pytest.raises(ValueError, match="margin"):
        PacedRateLimiter(InMemoryRateLimiter(clock), clock, margin=1.5)


async def test_a_429_slows_pacing_and_requeues_slots_taken_before_it() -> None:
    clock = FakeClock()
    inner = InMemoryRateLimiter(clock, decrease=0.5)
    paced = PacedRateLimiter(inner, clock, margin=0.0)
    limits = ModelLimits(rpm=60)
    await paced.acquire("m", limits, 1)
    await paced.penalize("m", 2.0)
    assert paced.interval("m", 60) == pytest.approx(2.0)  # AIMD halved the rate
    before = clock.monotonic()
    await paced.acquire("m", limits, 1)
    assert clock.monotonic() - before >= 2.0  # waited out the hold


async def test_waiters_that_took_a_slot_before_a_429_queue_again() -> None:
    clock = FakeClock()
    inner = InMemoryRateLimiter(clock)
    paced = PacedRateLimiter(inner, clock, margin=0.0)
    limits = ModelLimits(rpm=60)
    await paced.acquire("m", limits, 1)
    waiter = asyncio.create_task(paced.acquire("m", limits, 1))  # slot at +1 s
    await asyncio.sleep(0)
    await paced.penalize("m", 5.0)  # a 429 arrived while it waited
    await waiter
    assert clock.monotonic() >= 1000.0 + 5.0


class _StallingClock(FakeClock):
    """The first sleep overshoots by 0.3 s, as when the event loop was busy."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = False

    async def sleep(self, seconds: float) -> None:
        if not self.stalled and seconds > 0:
            self.stalled = True
            seconds += 0.3
        await super().sleep(seconds)


async def test_a_stall_shifts_the_schedule_instead_of_releasing_a_burst() -> None:
    clock = _StallingClock()
    paced = PacedRateLimiter(InMemoryRateLimiter(clock), clock, margin=0.0)
    limits = ModelLimits(rpm=600)  # one every 0.1 s
    start = clock.monotonic()
    admitted: list[float] = []

    async def one() -> None:
        await paced.acquire("m", limits, 1)
        admitted.append(clock.monotonic() - start)

    await asyncio.gather(*(one() for _ in range(4)))
    gaps = [b - a for a, b in itertools.pairwise(admitted)]
    assert admitted[1] >= 0.4 - 1e-9  # the stalled waiter woke late
    assert all(g >= 0.1 - 0.005 - 1e-9 for g in gaps)  # and nobody caught up behind it


async def test_adapt_reaches_the_inner_limiter_and_a_lower_cap_slows_the_pace() -> None:
    clock = FakeClock()
    inner = InMemoryRateLimiter(clock)
    paced = PacedRateLimiter(inner, clock, margin=0.0)
    limits = ModelLimits(rpm=600)  # configured: one every 0.1 s
    assert paced.interval("m", 600) == pytest.approx(0.1)
    await paced.adapt("m", Adaptation(cap_rpm=60))  # the upstream allows 60/min
    assert inner.caps("m")[0] == 60  # passed through
    assert paced.interval("m", 600) == pytest.approx(1.0)
    assert paced.interval("other", 600) == pytest.approx(0.1)  # per key
    await paced.acquire("m", limits, 1)
    start = clock.monotonic()
    await paced.acquire("m", limits, 1)
    assert clock.monotonic() - start == pytest.approx(1.0)
    await paced.adapt("m", Adaptation(cap_rpm=6000))  # a cap above the configured rpm
    assert paced.interval("m", 600) == pytest.approx(0.1)
    await paced.adapt("m", Adaptation())  # no cap any more
    assert paced.interval("m", 600) == pytest.approx(0.1)
    assert inner.caps("m")[0] == float("inf")


async def test_adapt_quota_is_honoured_through_the_pacer() -> None:
    clock = FakeClock()
    paced = PacedRateLimiter(InMemoryRateLimiter(clock), clock, margin=0.0)
    limits = ModelLimits(rpm=600)
    await paced.acquire("m", limits, 1)
    # None left until the upstream resets in 5 s: the next admission waits for it.
    await paced.adapt("m", Adaptation(requests_left=0, requests_reset=5.0))
    start = clock.monotonic()
    await paced.acquire("m", limits, 1)
    assert clock.monotonic() - start >= 5.0 - 1e-6


async def test_a_quota_hold_restarts_the_pace_instead_of_releasing_a_burst() -> None:
    clock = FakeClock()
    paced = PacedRateLimiter(InMemoryRateLimiter(clock), clock, margin=0.0)
    limits = ModelLimits(rpm=600)  # one every 0.1 s
    await paced.acquire("m", limits, 1)
    start = clock.monotonic()
    admitted: list[float] = []

    async def one() -> None:
        await paced.acquire("m", limits, 1)
        admitted.append(round(clock.monotonic() - start, 6))

    waiters = [asyncio.create_task(one()) for _ in range(5)]
    await asyncio.sleep(0)
    # The upstream's window is full for another second: every paced waiter must wait for
    # the reset and then go one interval apart, not all at once.
    await paced.adapt("m", Adaptation(requests_left=0, requests_reset=1.0))
    await asyncio.gather(*waiters)
    assert admitted[0] >= 1.0 - 1e-6
    gaps = [b - a for a, b in itertools.pairwise(admitted)]
    assert all(g >= 0.1 - 0.005 - 1e-9 for g in gaps), admitted


async def test_waiters_queued_behind_a_hold_take_one_slot_each() -> None:
    """Only slots taken before the restart are void: the waiters still queued when the hold
    arrives go once each, one interval apart after it (they used to take two slots each,
    which halved the rate of a batch whose upstream held every second)."""
    clock = FakeClock()
    paced = PacedRateLimiter(InMemoryRateLimiter(clock), clock, margin=0.0)
    limits = ModelLimits(rpm=600)  # one every 0.1 s
    start = clock.monotonic()
    admitted: list[float] = []
    taken = 0
    take = paced._take_slot

    async def counting(key: str, rpm: int) -> float:
        nonlocal taken
        taken += 1
        return await take(key, rpm)

    paced._take_slot = counting  # type: ignore[method-assign]

    third = asyncio.Event()

    async def one() -> None:
        await paced.acquire("m", limits, 1)
        admitted.append(round(clock.monotonic() - start, 6))
        if len(admitted) == 3:
            third.set()

    waiters = [asyncio.create_task(one()) for _ in range(10)]
    await third.wait()
    # At 0.2 s the upstream is full until 0.7 s. A waiter that already holds the 0.3 s slot
    # queues again; the others still queued go after the restart, one slot each.
    await paced.adapt("m", Adaptation(requests_left=0, requests_reset=0.5))
    await asyncio.gather(*waiters)
    assert taken <= 11, admitted
    after = admitted[3:]
    assert after[0] >= 0.7 - 1e-6
    assert all(b - a >= 0.1 - 0.005 - 1e-9 for a, b in itertools.pairwise(after)), admitted
    assert after[-1] <= 0.7 + 0.1 * 7 + 1e-6, admitted


async def test_a_share_paces_one_of_several_executors_at_its_part_of_the_rate() -> None:
    clock = FakeClock()
    half = PacedRateLimiter(InMemoryRateLimiter(clock), clock, margin=0.0, share=0.5)
    assert half.interval("m", 600) == pytest.approx(0.2)  # two such make 600/min
    with pytest.raises(ValueError, match="share"):
        PacedRateLimiter(InMemoryRateLimiter(clock), clock, share=0.0)
