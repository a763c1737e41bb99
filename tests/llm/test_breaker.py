from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest

from arbor.core.clock import FakeClock
from arbor.core.config import BreakerSettings
from arbor.core.errors import (
    CircuitOpenError,
    LLMTimeoutError,
    ProviderConnectionError,
    ProviderHTTPError,
    RateLimitedError,
)
from arbor.llm.breaker import BreakerRegistry, BreakerSnapshot, counts_as_failure

KEY = "openai:gpt-4o"
FAULT = ProviderHTTPError("upstream down", status_code=503)


def make(
    clock: FakeClock, *, threshold: int = 3, reset: float = 30.0, successes: int = 2
) -> tuple[BreakerRegistry, list[tuple[str, str]]]:
    changes: list[tuple[str, str]] = []
    settings = BreakerSettings(
        failure_threshold=threshold, reset_timeout=reset, half_open_successes=successes
    )
    registry = BreakerRegistry(settings, clock, on_change=lambda k, s: changes.append((k, s)))
    return registry, changes


def trip(registry: BreakerRegistry, n: int) -> None:
    for _ in range(n):
        registry.before_call(KEY)
        registry.record_failure(KEY, FAULT)


@pytest.mark.parametrize(
    ("exc", "counted"),
    [
        (ProviderHTTPError("x", status_code=500), True),
        (ProviderHTTPError("x", status_code=503), True),
        (ProviderHTTPError("x", status_code=408), True),
        (ProviderConnectionError("reset"), True),
        (LLMTimeoutError("slow"), True),
        (TimeoutError(), True),
        (None, True),
        (RateLimitedError("x", status_code=429, retry_after=1.0), False),
        (ProviderHTTPError("x", status_code=400), False),
        (ProviderHTTPError("x", status_code=401), False),
        (ProviderHTTPError("x", status_code=404), False),
        (ProviderHTTPError("x", status_code=422), False),
        (CircuitOpenError("open"), False),
        (asyncio.CancelledError(), False),
        (ValueError("bug in caller"), False),
    ],
)
def test_which_failures_count(exc: BaseException | None, counted: bool) -> None:
    assert counts_as_failure(exc) is counted


def test_opens_after_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    registry, changes = make(clock, threshold=3)
    trip(registry, 2)
    assert registry.state(KEY) == "closed"
    registry.before_call(KEY)
    registry.record_success(KEY)  # a success resets the streak
    trip(registry, 2)
    assert registry.state(KEY) == "closed"
    trip(registry, 1)
    assert registry.state(KEY) == "open"
    assert changes == [(KEY, "open")]


def test_client_errors_and_429s_never_open_it() -> None:
    registry, _ = make(FakeClock(), threshold=2)
    for _ in range(10):
        registry.before_call(KEY)
        registry.record_failure(KEY, ProviderHTTPError("bad", status_code=400))
        registry.record_failure(KEY, RateLimitedError("slow", status_code=429))
    assert registry.state(KEY) == "closed"


def test_no_call_passes_while_open_and_retry_after_counts_down() -> None:
    clock = FakeClock()
    registry, _ = make(clock, threshold=1, reset=30.0)
    trip(registry, 1)
    passed = 0
    for step in range(29):
        with pytest.raises(CircuitOpenError) as info:
            registry.before_call(KEY)
        assert info.value.retry_after == pytest.approx(30.0 - step)
        assert info.value.provider == "openai"
        assert info.value.model == "gpt-4o"
        assert registry.is_open(KEY)
        clock.advance(1.0)
    clock.advance(0.999)
    for _ in range(100):
        try:
            registry.before_call(KEY)
            passed += 1
        except CircuitOpenError:
            pass
    assert passed == 0


def test_half_open_admits_limited_trials_then_closes() -> None:
    clock = FakeClock()
    registry, changes = make(clock, threshold=1, reset=10.0, successes=2)
    trip(registry, 1)
    clock.advance(10.0)
    assert not registry.is_open(KEY)
    registry.before_call(KEY)  # trial 1
    assert registry.state(KEY) == "half_open"
    registry.before_call(KEY)  # trial 2
    with pytest.raises(CircuitOpenError):  # no third concurrent trial
        registry.before_call(KEY)
    assert registry.is_open(KEY)
    registry.record_success(KEY)
    assert registry.state(KEY) == "half_open"
    registry.before_call(KEY)  # the returned permit admits another trial
    registry.record_success(KEY)
    assert registry.state(KEY) == "closed"
    registry.record_success(KEY)  # the last trial finishing late changes nothing
    assert changes == [(KEY, "open"), (KEY, "half_open"), (KEY, "closed")]
    for _ in range(10):
        registry.before_call(KEY)
    # closed again with a fresh failure count
    trip(registry, 1)
    assert registry.state(KEY) == "open"


def test_half_open_failure_reopens_for_a_full_timeout() -> None:
    clock = FakeClock()
    registry, changes = make(clock, threshold=2, reset=10.0, successes=3)
    trip(registry, 2)
    clock.advance(10.0)
    registry.before_call(KEY)
    registry.record_success(KEY)
    registry.before_call(KEY)
    registry.record_failure(KEY, LLMTimeoutError("slow"))
    assert registry.state(KEY) == "open"
    with pytest.raises(CircuitOpenError) as info:
        registry.before_call(KEY)
    assert info.value.retry_after == pytest.approx(10.0)
    assert changes == [(KEY, "open"), (KEY, "half_open"), (KEY, "open")]


def test_a_cancelled_or_client_error_trial_returns_its_permit() -> None:
    clock = FakeClock()
    registry, _ = make(clock, threshold=1, reset=5.0, successes=1)
    trip(registry, 1)
    clock.advance(5.0)
    registry.before_call(KEY)
    registry.record_failure(KEY, asyncio.CancelledError())
    assert registry.state(KEY) == "half_open"
    registry.before_call(KEY)
    registry.record_failure(KEY, ProviderHTTPError("bad", status_code=400))
    registry.before_call(KEY)
    registry.record_success(KEY)
    assert registry.state(KEY) == "closed"


def test_permits_never_returned_are_reclaimed_after_reset_timeout() -> None:
    clock = FakeClock()
    registry, _ = make(clock, threshold=1, reset=5.0, successes=1)
    trip(registry, 1)
    clock.advance(5.0)
    registry.before_call(KEY)  # this caller vanishes without reporting
    with pytest.raises(CircuitOpenError):
        registry.before_call(KEY)
    clock.advance(5.0)
    registry.before_call(KEY)
    registry.record_success(KEY)
    assert registry.state(KEY) == "closed"


def test_keys_are_independent_and_unknown_keys_are_closed() -> None:
    registry, _ = make(FakeClock(), threshold=1)
    trip(registry, 1)
    registry.before_call("openai:gpt-4o-mini")
    assert registry.state("openai:gpt-4o-mini") == "closed"
    assert not registry.is_open("openai:gpt-4o-mini")
    assert registry.state(KEY) == "open"


def test_snapshot_and_apply_share_state_between_two_registries() -> None:
    """The seam a Redis store uses: publish on change, apply elsewhere."""
    clock_a, clock_b = FakeClock(start=100.0), FakeClock(start=5_000.0)
    b, b_changes = make(clock_b, threshold=3, reset=20.0)
    a_holder: list[BreakerRegistry] = []

    def publish(key: str, state: str) -> None:
        b.apply(key, a_holder[0].snapshot(key))

    a = BreakerRegistry(
        BreakerSettings(failure_threshold=3, reset_timeout=20.0, half_open_successes=1),
        clock_a,
        on_change=publish,
    )
    a_holder.append(a)
    for _ in range(3):
        a.record_failure(KEY, FAULT)
    assert b.state(KEY) == "open"
    with pytest.raises(CircuitOpenError) as info:
        b.before_call(KEY)
    assert info.value.retry_after == pytest.approx(20.0)
    clock_b.advance(20.0)
    b.before_call(KEY)
    assert b.state(KEY) == "half_open"
    b.apply(KEY, BreakerSnapshot("closed"))
    assert b.state(KEY) == "closed"
    assert b_changes == [(KEY, "open"), (KEY, "half_open"), (KEY, "closed")]


def _best_mean(call: Callable[[], object], n: int = 2_000, rounds: int = 5) -> float:
    """Seconds per ``call``, in the fastest of ``rounds`` rounds: a loaded machine (CI runs
    tests in parallel) slows some rounds, not what the code costs."""
    means = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            call()
        means.append((time.perf_counter() - start) / n)
    return min(means)


def test_rejecting_while_open_is_fast() -> None:
    registry, _ = make(FakeClock(), threshold=1, reset=60.0)
    trip(registry, 1)

    def reject() -> None:
        with contextlib.suppress(CircuitOpenError):
            registry.before_call(KEY)

    mean = _best_mean(reject)
    assert mean < 50e-6, f"mean rejection {mean * 1e6:.2f} µs"


def test_admitting_while_closed_is_fast() -> None:
    registry, _ = make(FakeClock())
    registry.record_failure(KEY, FAULT)  # the breaker exists and is closed

    def admit() -> None:
        registry.before_call(KEY)
        registry.record_success(KEY)

    mean = _best_mean(admit)
    assert mean < 5e-6, f"mean closed before_call+record_success {mean * 1e6:.2f} µs"


def test_pristine_breakers_are_forgotten_so_model_ids_cannot_grow_the_table() -> None:
    clock = FakeClock()
    registry, _ = make(clock, threshold=2)
    trip(registry, 2)  # KEY is open: remembered
    for i in range(3000):  # one counted failure then a success each: closed, nothing counted
        key = f"openai:random-{i}"
        registry.record_failure(key, FAULT)
        registry.record_success(key)
    assert len(registry._breakers) < 2100  # swept whenever the table doubled
    assert registry.state(KEY) == "open"
    half = "openai:one-failure"
    registry.record_failure(half, FAULT)  # a failure counted: kept through sweeps
    for i in range(3000):
        registry.record_failure(f"openai:more-{i}", FAULT)
        registry.record_success(f"openai:more-{i}")
    assert half in registry._breakers and registry.state(KEY) == "open"
