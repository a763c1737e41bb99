from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbor.core.clock import FakeClock
from arbor.core.config import RetrySettings
from arbor.core.errors import (
    BudgetExceededError,
    CircuitOpenError,
    ContextTooLongError,
    LLMTimeoutError,
    ProviderConnectionError,
    ProviderHTTPError,
    RateLimitedError,
)
from arbor.llm.retry import RetryPolicy, parse_retry_after


def policy(clock: FakeClock | None = None, **settings: float) -> RetryPolicy:
    return RetryPolicy(RetrySettings(**settings), clock or FakeClock(), random.Random(7))


# ---- what is retried --------------------------------------------------------------------
@pytest.mark.parametrize("status", [408, 409, 429, 500, 501, 502, 503, 504, 529, 599])
def test_retries_timeouts_conflicts_rate_limits_and_server_errors(status: int) -> None:
    assert RetryPolicy.is_retriable(ProviderHTTPError("x", status_code=status))


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 405, 410, 413, 422, 451])
def test_never_retries_client_errors(status: int) -> None:
    assert not RetryPolicy.is_retriable(ProviderHTTPError("x", status_code=status))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RateLimitedError("slow down", status_code=429, retry_after=2.0), True),
        (ProviderConnectionError("reset"), True),
        (LLMTimeoutError("read", phase="read"), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (ContextTooLongError("too long", status_code=400), False),
        (CircuitOpenError("open", retry_after=3.0), False),
        (BudgetExceededError("broke", scope="global"), False),
        (ValueError("bug"), False),
    ],
)
def test_retriable_by_error_type(exc: BaseException, expected: bool) -> None:
    assert RetryPolicy.is_retriable(exc) is expected


# ---- how long to wait -------------------------------------------------------------------
@given(
    attempt=st.integers(min_value=1, max_value=40),
    base=st.floats(min_value=0.0, max_value=5.0),
    max_delay=st.floats(min_value=0.0, max_value=60.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_is_full_jitter_within_bounds(
    attempt: int, base: float, max_delay: float, seed: int
) -> None:
    p = RetryPolicy(
        RetrySettings(base_delay=base, max_delay=max_delay), FakeClock(), random.Random(seed)
    )
    ceiling = min(max_delay, base * 2 ** (attempt - 1))
    d = p.delay(attempt, ProviderConnectionError("x"))
    assert d is not None
    assert 0.0 <= d <= ceiling


def test_backoff_grows_exponentially_and_spreads_over_the_whole_range() -> None:
    p = policy(base_delay=0.5, max_delay=20.0)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (7, 20.0), (30, 20.0)]:
        draws = [p.delay(attempt) or 0.0 for _ in range(2000)]
        assert max(draws) <= ceiling
        assert max(draws) > 0.9 * ceiling  # full jitter reaches the top ...
        assert min(draws) < 0.1 * ceiling  # ... and the bottom


def test_retry_after_wins_over_backoff() -> None:
    p = policy(base_delay=10.0, retry_after_cap=60.0)
    assert p.delay(1, RateLimitedError("x", status_code=429, retry_after=1.25)) == 1.25
    assert p.delay(5, ProviderHTTPError("x", status_code=503, retry_after=0.0)) == 0.0


def test_retry_after_beyond_the_cap_gives_up() -> None:
    p = policy(retry_after_cap=30.0)
    assert p.delay(1, RateLimitedError("x", status_code=429, retry_after=30.0)) == 30.0
    assert p.delay(1, RateLimitedError("x", status_code=429, retry_after=30.5)) is None


# ---- Retry-After headers ----------------------------------------------------------------
NOW = 1_700_000_000.0


def http_date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250.5", "retry-after": "9"}, 0.2505),
        ({"Retry-After-Ms": "20"}, 0.02),
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),  # bad ms: fall back
        ({"retry-after-ms": "-1", "retry-after": "3"}, 3.0),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": " 2.5 "}, 2.5),
        ({"RETRY-AFTER": "0"}, 0.0),
        ({"Retry-After": http_date(NOW + 30)}, 30.0),
        ({"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}, 0.0),  # in the past
        ({"Retry-After": "-5"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "tomorrow-ish"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "Wed, 32 Oct 2015 07:28:00 GMT"}, None),
        ({"content-type": "application/json"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


def test_parse_retry_after_reads_httpx_headers_and_uses_the_clock() -> None:
    clock = FakeClock(wall=NOW)
    p = policy(clock)
    headers = httpx.Headers({"Retry-After": http_date(NOW + 12)})
    assert p.parse_retry_after(headers) == 12.0
    clock.advance(2)
    assert p.parse_retry_after(headers) == 10.0


# ---- the attempt loop -------------------------------------------------------------------
class Script:
    """Raises the scripted errors in order, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_two_429s_with_retry_after_then_success() -> None:
    clock = FakeClock()
    call = Script(*[RateLimitedError("x", status_code=429, retry_after=1.0)] * 2)
    seen: list[tuple[int, float]] = []
    result = await policy(clock).run(call, on_retry=lambda n, _exc, d: seen.append((n, d)))
    assert result == "ok"
    assert call.calls == 3
    assert clock.sleeps == [1.0, 1.0]
    assert sum(clock.sleeps) == 2.0
    assert seen == [(1, 1.0), (2, 1.0)]


async def test_client_error_is_raised_after_one_call() -> None:
    clock = FakeClock()
    call = Script(ProviderHTTPError("bad request", status_code=400))
    with pytest.raises(ProviderHTTPError) as info:
        await policy(clock).run(call)
    assert info.value.status_code == 400
    assert call.calls == 1
    assert clock.sleeps == []


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    clock = FakeClock()
    errors = [ProviderHTTPError(f"boom {i}", status_code=503) for i in range(10)]
    call = Script(*errors)
    with pytest.raises(ProviderHTTPError) as info:
        await policy(clock, max_attempts=4, base_delay=0.5).run(call)
    assert info.value is errors[3]
    assert call.calls == 4
    assert len(clock.sleeps) == 3
    assert all(0 <= d <= 0.5 * 2**i for i, d in enumerate(clock.sleeps))


async def test_retry_after_over_the_cap_is_reraised_without_sleeping() -> None:
    clock = FakeClock()
    call = Script(RateLimitedError("x", status_code=429, retry_after=120.0))
    with pytest.raises(RateLimitedError):
        await policy(clock, retry_after_cap=60.0).run(call)
    assert call.calls == 1
    assert clock.sleeps == []


async def test_open_circuit_is_not_retried() -> None:
    call = Script(CircuitOpenError("open", retry_after=5.0))
    with pytest.raises(CircuitOpenError):
        await policy().run(call)
    assert call.calls == 1


async def test_single_attempt_setting_never_retries() -> None:
    call = Script(ProviderConnectionError("reset"))
    with pytest.raises(ProviderConnectionError):
        await policy(max_attempts=1).run(call)
    assert call.calls == 1
