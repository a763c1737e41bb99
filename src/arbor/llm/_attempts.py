"""The inner loop of one LLM call against one model: limiter → breaker → retry → provider.

Every attempt (the first and each retry) re-enters the rate limiter and the circuit breaker,
so retries count against the limits and stop as soon as the circuit opens. A context-length
error shortens the prompt once by the configured strategy and tries again without using up
an attempt.

After each attempt the upstream's ``x-ratelimit-*`` headers, when it sent any, adapt the
model's limiter keys (:mod:`arbor.llm._ratelimit_headers`): held until the upstream's reset
when what remains is already taken by the requests in flight, capped at the
upstream's limits when they are lower than the configured ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from arbor.core.clock import Clock
from arbor.core.config import ModelLimits, RetrySettings
from arbor.core.errors import (
    ArborError,
    CircuitOpenError,
    ContextTooLongError,
    LLMTimeoutError,
    RateLimitedError,
)
from arbor.core.metrics import ModelMetrics
from arbor.llm._ratelimit_headers import LAST_RATE_LIMITS, Adaptation, plan
from arbor.llm.breaker import BreakerRegistry
from arbor.llm.model import Model
from arbor.llm.ratelimit import RateLimiter, Reservation
from arbor.llm.retry import RetryPolicy
from arbor.llm.types import ChatRequest, EmbeddingRequest, Message, StreamChunk

__all__ = ["AttemptRunner", "truncate_messages"]

T = TypeVar("T")
#: What an attempt sends: a chat request (which may be truncated) or an embedding request.
R = TypeVar("R", ChatRequest, EmbeddingRequest)
Limits = Sequence[tuple[str, ModelLimits]]
log = structlog.get_logger("arbor.llm")


def truncate_messages(messages: list[Message], strategy: str) -> list[Message] | None:
    """A shorter conversation for a retry after a context-length error, or ``None`` when
    nothing more can be dropped. System messages and the last message always stay."""
    system = [m for m in messages if m.role in ("system", "developer")]
    rest = [m for m in messages if m.role not in ("system", "developer")]
    if len(rest) <= 1:
        return None
    if strategy == "keep_last":
        kept = rest[-1:]
    else:  # drop_oldest: keep the newer half of the turns
        kept = rest[len(rest) // 2 :]
    # A tool result whose assistant call was dropped is invalid for most providers.
    while len(kept) > 1 and kept[0].role == "tool":
        kept = kept[1:]
    return system + kept


@dataclass(slots=True)
class AttemptRunner:
    """Runs attempts of one request on one model under limits, breaker and retry policy."""

    model_id: str
    model: Model
    limits: Limits
    limiter: RateLimiter | None
    breakers: BreakerRegistry
    retry: RetryPolicy
    retry_settings: RetrySettings
    clock: Clock
    metrics: ModelMetrics
    total_timeout: float
    #: Tokens reserved by this runner's attempts waiting for the upstream right now.
    _in_flight_tokens: int = field(default=0, init=False)
    #: The caps last applied per limiter key (an unchanged one is not sent again).
    _caps: dict[str, tuple[int | None, int | None]] = field(default_factory=dict, init=False)

    async def _acquire(self, reserve: Callable[[], int], extra: Limits) -> list[Reservation]:
        """Take a request slot and ``reserve()`` tokens under every applicable limit; the
        token estimate is only computed when some limit needs it."""
        limits = [*self.limits, *extra] if extra else self.limits
        if self.limiter is None or not limits:
            return []
        tokens = reserve()
        leases: list[Reservation] = []
        try:
            for key, lim in limits:
                leases.append(await self.limiter.acquire(key, lim, tokens))
        except BaseException:  # give back what was taken before the failure
            await self._settle(leases, 0)
            raise
        return leases

    async def _settle(self, leases: list[Reservation], actual_tokens: int) -> None:
        if self.limiter is not None:
            for lease in leases:
                await self.limiter.reconcile(lease, actual_tokens)

    async def _within_total(self, awaitable: Awaitable[T]) -> T:
        """The overall deadline for one attempt (for a stream: until its first chunk; the
        provider enforces the idle gap between chunks after that)."""
        try:
            async with asyncio.timeout(self.total_timeout):
                return await awaitable
        except TimeoutError as exc:
            provider, _, name = self.model_id.partition(":")
            raise LLMTimeoutError(
                f"{self.model_id}: no answer within {self.total_timeout:g}s (total timeout)",
                phase="total",
                provider=provider,
                model=name,
            ) from exc

    async def _on_failure(self, exc: ArborError, attempt: int) -> float | None:
        """Book-keeping after a failed attempt; the delay before the next one, or None."""
        self.breakers.record_failure(self.model_id, exc)
        if isinstance(exc, RateLimitedError) and self.limiter is not None:
            for key, _ in self.limits:
                await self.limiter.penalize(key, exc.retry_after)
        if attempt >= self.retry_settings.max_attempts or not self.retry.is_retriable(exc):
            return None
        return self.retry.delay(attempt, exc)

    async def run(
        self,
        request: R,
        call: Callable[[R], Awaitable[T]],
        tokens_of: Callable[[T], int],
        reserve: Callable[[], int],
        extra_limits: Limits = (),
    ) -> tuple[T, R]:
        """Call until success or give up; returns the result and the request that won
        (which differs from ``request`` when the prompt was truncated)."""

        async def once(req: R) -> T:
            return await self._within_total(call(req))

        result, leases, used = await self._loop(request, once, reserve, extra_limits)
        await self._settle(leases, tokens_of(result))
        return result, used

    async def open_stream(
        self, request: ChatRequest, reserve: Callable[[], int], extra_limits: Limits = ()
    ) -> tuple[StreamChunk, AsyncIterator[StreamChunk], list[Reservation], ChatRequest]:
        """Attempts until a stream yields its first chunk (retries are only safe before any
        output reached the caller). Returns the first chunk, the live iterator, the
        limiter leases to settle when the stream ends, and the request used."""
        (first, stream), leases, used = await self._loop(request, self._open, reserve, extra_limits)
        return first, stream, leases, used

    async def _open(self, request: ChatRequest) -> tuple[StreamChunk, AsyncIterator[StreamChunk]]:
        stream = self.model.stream(request)
        try:
            first = await self._within_total(anext(stream))
        except StopAsyncIteration:
            return StreamChunk(finish_reason="stop"), _empty()
        except BaseException:
            await _close(stream)
            raise
        return first, stream

    async def _loop(
        self,
        request: R,
        once: Callable[[R], Awaitable[T]],
        reserve: Callable[[], int],
        extra_limits: Limits,
    ) -> tuple[T, list[Reservation], R]:
        attempt = 0
        truncated = False
        while True:
            leases = await self._acquire(reserve, extra_limits)
            tokens = leases[0].tokens if leases else 0
            try:
                self.breakers.before_call(self.model_id)
                result = await self._attempt(once, request, tokens)
            except CircuitOpenError:
                await self._settle(leases, 0)
                raise
            except ArborError as exc:
                await self._settle(leases, 0)
                if (
                    isinstance(exc, ContextTooLongError)
                    and not truncated
                    and isinstance(request, ChatRequest)  # texts to embed are not cut
                ):
                    self.breakers.record_failure(self.model_id, exc)  # returns a trial permit
                    shorter = self._truncate(request)
                    if shorter is not None:
                        request, truncated = shorter, True
                        continue
                attempt += 1
                delay = await self._on_failure(exc, attempt)
                if delay is None:
                    raise
                self.metrics.retries.inc()
                log.info(
                    "llm.retry",
                    model=self.model_id,
                    attempt=attempt,
                    error=exc.kind,
                    delay_s=round(delay, 3),
                )
                await self.clock.sleep(delay)
                continue
            except BaseException as exc:  # cancelled: give back the half-open permit
                self.breakers.record_failure(self.model_id, exc)
                await self._settle(leases, 0)
                raise
            self.breakers.record_success(self.model_id)
            return result, leases, request

    async def _attempt(self, once: Callable[[R], Awaitable[T]], request: R, tokens: int) -> T:
        """One call, then adapt to the rate-limit headers its response carried, if any."""
        LAST_RATE_LIMITS.set(None)
        self._in_flight_tokens += tokens
        try:
            result = await once(request)
        except asyncio.CancelledError:
            self._in_flight_tokens -= tokens
            raise
        except BaseException:
            await self._follow_headers(tokens)
            raise
        await self._follow_headers(tokens)
        return result

    async def _follow_headers(self, tokens: int) -> None:
        """This attempt is over: adapt the model's limiter keys to the headers it got
        (before its reservations are settled: the limiter still counts it in flight)."""
        self._in_flight_tokens -= tokens
        info = LAST_RATE_LIMITS.get()
        if info is None or self.limiter is None or not self.limits:
            return
        for key, lim in self.limits:
            # What remains goes to the others in flight first.
            wanted = plan(info, lim, in_flight_tokens=self._in_flight_tokens)
            await self._adapt(key, wanted)

    async def _adapt(self, key: str, wanted: Adaptation) -> None:
        assert self.limiter is not None
        caps = (wanted.cap_rpm, wanted.cap_tpm)
        quota = wanted.requests_left is not None or wanted.tokens_left is not None
        if not quota and self._caps.get(key, (None, None)) == caps:
            return  # nothing new to tell the limiter (a round trip saved on Redis)
        if wanted.hold is not None:
            log.debug("llm.ratelimit.upstream_hold", model=self.model_id, hold_s=wanted.hold)
        if self._caps.get(key, (None, None)) != caps:
            log.info("llm.ratelimit.upstream_caps", model=self.model_id, rpm=caps[0], tpm=caps[1])
        self._caps[key] = caps
        await self.limiter.adapt(key, wanted)

    def _truncate(self, request: ChatRequest) -> ChatRequest | None:
        strategy = self.retry_settings.on_context_too_long
        if strategy == "error":
            return None
        shorter = truncate_messages(request.messages, strategy)
        if shorter is None:
            return None
        log.info(
            "llm.truncated",
            model=self.model_id,
            strategy=strategy,
            dropped=len(request.messages) - len(shorter),
        )
        return request.model_copy(update={"messages": shorter})

    async def settle(self, leases: list[Reservation], actual_tokens: int) -> None:
        await self._settle(leases, actual_tokens)


async def _empty() -> AsyncIterator[StreamChunk]:
    return
    yield  # pragma: no cover


async def _close(stream: AsyncIterator[StreamChunk] | None) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
