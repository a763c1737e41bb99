"""The inner loop of one LLM call against one model: limiter → breaker → retry → provider.

Every attempt (the first and each retry) re-enters the rate limiter and the circuit breaker,
so retries count against the limits and stop as soon as the circuit opens. A context-length
error shortens the prompt once by the configured strategy and tries again without using up
an attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
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
            try:
                self.breakers.before_call(self.model_id)
                result = await once(request)
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
