"""Circuit breakers: stop calling an upstream that keeps failing, and probe it before
trusting it again.

One breaker per key (``provider:model``)::

    closed ──failure_threshold consecutive failures──▶ open
    open ──reset_timeout elapsed, next call──▶ half_open
    half_open ──half_open_successes successes──▶ closed
    half_open ──any counted failure──▶ open

While open, :meth:`BreakerRegistry.before_call` raises :class:`CircuitOpenError` without
touching the network, so a fallback model is tried at once. Half-open admits at most
``half_open_successes`` trial calls in flight; a permit lost by a caller that never reported
back is reclaimed after ``reset_timeout``, so a breaker cannot stay stuck half-open.

What counts as a failure (:func:`counts_as_failure`): upstream faults only — 5xx, 408,
timeouts and connection errors. 4xx client errors say nothing about the upstream's health,
and 429 is deliberately *not* counted: the upstream is up and telling us to slow down, which
is the rate limiter's job (``RateLimiter.penalize``); opening on 429 would cut all traffic
for ``reset_timeout`` instead of the few seconds it asked for. An error that does not count
still ends a half-open trial (its permit is returned), and so does cancellation.

The state lives in this process. A shared store (Redis, :mod:`arbor.llm._redis_breaker`)
plugs in through the two seams it needs: ``on_change`` to publish transitions and
:meth:`BreakerRegistry.apply` to adopt a :class:`BreakerSnapshot` published by another
process; counting stays local, so the hot path never waits on the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from arbor.core.clock import Clock
from arbor.core.config import BreakerSettings
from arbor.core.errors import (
    CircuitOpenError,
    LLMTimeoutError,
    ProviderConnectionError,
    ProviderHTTPError,
)

__all__ = [
    "BreakerRegistry",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "OnBreakerChange",
    "counts_as_failure",
]

BreakerState = Literal["closed", "open", "half_open"]
#: Called after every transition with the breaker's key and its new state.
OnBreakerChange = Callable[[str, BreakerState], None]

#: Breakers kept before pristine ones are swept (the threshold then doubles with the rest).
_SWEEP_MIN = 1024
#: retry_after reported while every half-open trial permit is taken: trials are short.
_TRIAL_BUSY_RETRY_AFTER = 1.0


def counts_as_failure(exc: BaseException | None) -> bool:
    """Whether an error says the upstream is unhealthy (``None``: failed, no detail)."""
    if exc is None:
        return True
    if isinstance(exc, ProviderHTTPError):
        return exc.status_code >= 500 or exc.status_code == 408
    return isinstance(
        exc, (ProviderConnectionError, LLMTimeoutError, TimeoutError, ConnectionError)
    )


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker's state in a form another process can adopt (times are relative)."""

    state: BreakerState
    #: Seconds until an open breaker admits a trial; 0 unless open.
    retry_after: float = 0.0


class CircuitBreaker:
    """The state machine for one key. Not shared across event loops without the registry's
    callers serialising access (every method is synchronous and never awaits)."""

    __slots__ = (
        "_clock",
        "_failures",
        "_in_flight",
        "_last_trial_at",
        "_model",
        "_on_change",
        "_opened_at",
        "_provider",
        "_settings",
        "_state",
        "_successes",
        "key",
    )

    def __init__(
        self,
        key: str,
        settings: BreakerSettings,
        clock: Clock,
        on_change: OnBreakerChange | None = None,
    ) -> None:
        self.key = key
        self._provider, _, self._model = key.partition(":")
        self._settings = settings
        self._clock = clock
        self._on_change = on_change
        self._state: BreakerState = "closed"
        self._failures = 0  # consecutive counted failures while closed
        self._opened_at = 0.0
        self._in_flight = 0  # half-open trial permits handed out and not yet returned
        self._successes = 0  # half-open successes so far
        self._last_trial_at = 0.0

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def pristine(self) -> bool:
        """Closed with no failure counted: indistinguishable from a new breaker."""
        return self._state == "closed" and self._failures == 0 and self._in_flight == 0

    def remaining(self) -> float:
        """Seconds until an open breaker lets a trial through (0 when not open)."""
        if self._state != "open":
            return 0.0
        return max(0.0, self._opened_at + self._settings.reset_timeout - self._clock.monotonic())

    def would_reject(self) -> bool:
        """True when :meth:`before_call` would raise now; changes nothing."""
        if self._state == "closed":
            return False
        if self._state == "open":
            return self.remaining() > 0.0
        return self._in_flight >= self._settings.half_open_successes and not self._lost_permits()

    def before_call(self) -> None:
        """Admit a call or raise :class:`CircuitOpenError`; in half-open, takes a permit."""
        if self._state == "closed":
            return
        now = self._clock.monotonic()
        if self._state == "open":
            remaining = self._opened_at + self._settings.reset_timeout - now
            if remaining > 0.0:
                raise CircuitOpenError(
                    f"circuit open for {self.key}; next trial in {remaining:.2f}s",
                    provider=self._provider,
                    model=self._model,
                    retry_after=remaining,
                )
            self._transition("half_open", now)
        if self._in_flight >= self._settings.half_open_successes:
            if not self._lost_permits():
                raise CircuitOpenError(
                    f"circuit half-open for {self.key}; trial calls in flight",
                    provider=self._provider,
                    model=self._model,
                    retry_after=_TRIAL_BUSY_RETRY_AFTER,
                )
            self._in_flight = 0  # permits nobody returned within reset_timeout
        self._in_flight += 1
        self._last_trial_at = now

    def record_success(self) -> None:
        state = self._state
        if state == "closed":
            self._failures = 0
        elif state == "half_open":
            self._in_flight = max(0, self._in_flight - 1)
            self._successes += 1
            if self._successes >= self._settings.half_open_successes:
                self._transition("closed", self._clock.monotonic())
        # open: a call admitted before the breaker opened finished late; it proves little.

    def record_failure(self, exc: BaseException | None = None) -> None:
        """Report a failed (or cancelled) call; :func:`counts_as_failure` decides if it
        moves the breaker."""
        counted = counts_as_failure(exc)
        state = self._state
        if state == "half_open":
            self._in_flight = max(0, self._in_flight - 1)
            if counted:
                self._transition("open", self._clock.monotonic())
        elif state == "closed" and counted:
            self._failures += 1
            if self._failures >= self._settings.failure_threshold:
                self._transition("open", self._clock.monotonic())

    def snapshot(self) -> BreakerSnapshot:
        return BreakerSnapshot(self._state, self.remaining())

    def apply(self, snapshot: BreakerSnapshot) -> None:
        """Adopt a state decided elsewhere (another process, via a shared store)."""
        now = self._clock.monotonic()
        if snapshot.state == "open":
            # Open for what the publisher had left, measured on our clock.
            wanted = now - (self._settings.reset_timeout - max(0.0, snapshot.retry_after))
            if self._state == "open" and self._opened_at >= wanted:
                return
            self._transition("open", wanted)
        elif snapshot.state != self._state:
            self._transition(snapshot.state, now)

    def _lost_permits(self) -> bool:
        elapsed = self._clock.monotonic() - self._last_trial_at
        return elapsed >= self._settings.reset_timeout

    def _transition(self, state: BreakerState, now: float) -> None:
        self._state = state
        self._failures = 0
        self._in_flight = 0
        self._successes = 0
        if state == "open":
            self._opened_at = now
        if self._on_change is not None:
            self._on_change(self.key, state)


class BreakerRegistry:
    """Breakers by key, created on first use, all with the same settings and clock.

    ``on_change(key, state)`` is called after every transition, e.g. to export the state to
    metrics or publish it to a shared store.
    """

    __slots__ = ("_breakers", "_clock", "_on_change", "_settings", "_sweep_at")

    def __init__(
        self,
        settings: BreakerSettings,
        clock: Clock,
        *,
        on_change: OnBreakerChange | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._on_change = on_change
        self._breakers: dict[str, CircuitBreaker] = {}
        self._sweep_at = _SWEEP_MIN

    def breaker(self, key: str) -> CircuitBreaker:
        found = self._breakers.get(key)
        if found is None:
            if len(self._breakers) >= self._sweep_at:
                self._sweep()
            found = CircuitBreaker(key, self._settings, self._clock, self._on_change)
            self._breakers[key] = found
        return found

    def _sweep(self) -> None:
        """Forget closed breakers with no failures counted (what a new one starts as):
        keys include model ids callers choose, so the table must not keep every one."""
        for key in [k for k, b in self._breakers.items() if b.pristine]:
            del self._breakers[key]
        self._sweep_at = max(_SWEEP_MIN, 2 * len(self._breakers))

    def before_call(self, key: str) -> None:
        """Raise :class:`CircuitOpenError` (with ``retry_after``) if ``key`` must not be
        called now; otherwise admit the call (taking a trial permit when half-open)."""
        found = self._breakers.get(key)
        if found is not None:
            found.before_call()

    def record_success(self, key: str) -> None:
        found = self._breakers.get(key)
        if found is not None:
            found.record_success()

    def record_failure(self, key: str, exc: BaseException | None = None) -> None:
        """Report any failure, including cancellation, with its exception; the breaker
        decides whether it counts."""
        if counts_as_failure(exc) or key in self._breakers:
            self.breaker(key).record_failure(exc)

    def state(self, key: str) -> BreakerState:
        found = self._breakers.get(key)
        return "closed" if found is None else found.state

    def is_open(self, key: str) -> bool:
        """True when a call to ``key`` would be rejected now (for skipping a fallback)."""
        found = self._breakers.get(key)
        return found is not None and found.would_reject()

    def snapshot(self, key: str) -> BreakerSnapshot:
        found = self._breakers.get(key)
        return BreakerSnapshot("closed") if found is None else found.snapshot()

    def apply(self, key: str, snapshot: BreakerSnapshot) -> None:
        self.breaker(key).apply(snapshot)
