from __future__ import annotations

import asyncio

import pytest

from arbor.core.clock import FakeClock
from arbor.core.config import ModelLimits
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
    paced._generation["m"] = 1  # a 429 arrived while it waited
    paced._next["m"] = clock.monotonic() + 5.0
    await waiter
    assert clock.monotonic() >= 1000.0 + 5.0
