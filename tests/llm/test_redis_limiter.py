"""The Redis rate limiter against a real Redis: exact windows across processes, tokens,
reconcile and the 429 hold."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from arbor.core.clock import SystemClock
from arbor.core.config import ModelLimits
from arbor.llm._redis_limiter import (
    LimiterUnavailableError,
    RedisRateLimiter,
    RedisReservation,
)
from arbor.llm.ratelimit import TokenLimitError

pytestmark = pytest.mark.redis

_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from redis.asyncio import Redis
    from arbor.core.clock import SystemClock
    from arbor.core.config import ModelLimits
    from arbor.llm._redis_limiter import RedisRateLimiter

    async def main(url, prefix, seconds, mode):
        redis = Redis.from_url(url)
        limiter = RedisRateLimiter(
            redis, SystemClock(), prefix=prefix, window=1.0, poll_interval=0.02
        )
        # tpm: 10 tokens reserved, 10 used; 100 per window means at most 10 requests.
        limits = ModelLimits(rpm=20) if mode == "rpm" else ModelLimits(tpm=100)
        granted = []
        end = time.monotonic() + seconds

        async def hammer():
            while time.monotonic() < end:
                r = await limiter.acquire("openai:gpt", limits, 10)
                granted.append(r.server_time)
                await limiter.reconcile(r, 10)

        await asyncio.gather(*(hammer() for _ in range(8)))
        await redis.aclose()
        print(json.dumps(granted))

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]))
    """
)


@pytest.fixture
async def redis(redis_server_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server_url)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"arbor-test:{uuid.uuid4().hex[:12]}"


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.mark.parametrize(("mode", "per_window"), [("rpm", 20), ("tpm", 10)])
def test_three_processes_never_exceed_the_limit_together(
    redis_server_url: str, prefix: str, tmp_path: Path, mode: str, per_window: int
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), redis_server_url, prefix, "3.5", mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    granted: list[float] = []
    per_process: list[int] = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        times = json.loads(out)
        per_process.append(len(times))
        granted += times
    # The limit per 1 s window holds for everyone together, on Redis's own clock...
    assert _max_in_window(granted, 1.0) <= per_window
    # ...and is used, not starved: 3.5 s hold at least 3 full windows.
    assert len(granted) >= 3 * per_window
    assert all(n > 0 for n in per_process)


async def test_tokens_per_window_and_reconcile_frees_tokens(redis: Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(redis, SystemClock(), prefix=prefix, window=30.0)
    limits = ModelLimits(tpm=100)
    first = await limiter.acquire("m", limits, 80)
    assert isinstance(first, RedisReservation)
    assert await limiter.usage("m") == (1, 80)
    waiting = asyncio.create_task(limiter.acquire("m", limits, 50))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # 80 + 50 > 100 within the window
    await limiter.reconcile(first, 20)  # the call used only 20 tokens
    second = await asyncio.wait_for(waiting, 20)
    assert await limiter.usage("m") == (2, 70)
    await limiter.reconcile(second, 50)
    await limiter.reconcile(second, 999)  # only once
    assert await limiter.usage("m") == (2, 70)


async def test_a_request_larger_than_tpm_fails_at_once(redis: Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(redis, SystemClock(), prefix=prefix)
    with pytest.raises(TokenLimitError, match="can never fit"):
        await limiter.acquire("m", ModelLimits(tpm=10), 11)


def test_aimd_settings_are_checked_like_the_in_memory_limiter(redis: Redis) -> None:
    with pytest.raises(ValueError, match="0 < decrease <= 1"):
        RedisRateLimiter(redis, SystemClock(), floor=0.0)
    with pytest.raises(ValueError, match="window must be positive"):
        RedisRateLimiter(redis, SystemClock(), window=0.0)


async def test_penalize_holds_every_limiter_and_cuts_the_factor(
    redis_server_url: str, prefix: str
) -> None:
    a_conn, b_conn = Redis.from_url(redis_server_url), Redis.from_url(redis_server_url)
    try:
        clock = SystemClock()
        a = RedisRateLimiter(a_conn, clock, prefix=prefix, window=5.0, increase=0.25)
        b = RedisRateLimiter(b_conn, clock, prefix=prefix, window=5.0, increase=0.25)
        limits = ModelLimits(rpm=100)
        await a.penalize("m", 0.4)
        assert await b.factor("m") == 0.5
        started = asyncio.get_running_loop().time()
        r = await b.acquire("m", limits, 1)
        assert asyncio.get_running_loop().time() - started >= 0.3  # held for the 429
        await b.reconcile(r, 10)
        assert await a.factor("m") == 0.75  # additive increase after a success
    finally:
        await a_conn.aclose()
        await b_conn.aclose()


async def test_no_limits_never_touches_redis(prefix: str) -> None:
    # An unreachable server: an unlimited key must not need it.
    redis = Redis.from_url("redis://127.0.0.1:1/0")
    try:
        limiter = RedisRateLimiter(redis, SystemClock(), prefix=prefix)
        r = await limiter.acquire("m", ModelLimits(), 5)
        await limiter.reconcile(r, 3)
        assert r.tokens == 3
    finally:
        await redis.aclose()


async def test_a_cancelled_waiter_takes_nothing(redis: Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(redis, SystemClock(), prefix=prefix, window=30.0)
    limits = ModelLimits(rpm=1)
    await limiter.acquire("m", limits, 1)
    waiting = asyncio.create_task(limiter.acquire("m", limits, 1))
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await limiter.usage("m") == (1, 1)
    # Cancelled right as the script runs: whatever it reserved is given back.
    won = 0
    for i in range(40):
        racing = asyncio.create_task(limiter.acquire("free", ModelLimits(rpm=100), 5))
        for _ in range(i % 4):
            await asyncio.sleep(0)
        racing.cancel()
        try:
            r = await racing
        except asyncio.CancelledError:
            continue
        won += 1
        await limiter.reconcile(r, 0)
    # Only the admissions someone received remain, and they hold no tokens.
    assert await limiter.usage("free") == (won, 0)


async def test_redis_down_fails_acquire_clearly_and_never_reconcile(prefix: str) -> None:
    down = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        limiter = RedisRateLimiter(down, SystemClock(), prefix=prefix)
        with pytest.raises(LimiterUnavailableError, match="did not answer for 'm'"):
            await limiter.acquire("m", ModelLimits(rpm=5), 1)
        r = RedisReservation("m", 1, 0.0, "x", 0.0)
        r.logged = True
        await limiter.reconcile(r, 1)  # logged, not raised: the call already happened
        await limiter.penalize("m", 1.0)
    finally:
        await down.aclose()
