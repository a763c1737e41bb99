"""``LLMClient``: the one pipeline every agent, batch and request goes through.

Order, for plain and streamed calls alike::

    cache → budget reservation → rate limiter → circuit breaker → retry → provider
          → usage/cost → budget commit → cache fill → metrics/trace

Fallback chains (``settings.llm.fallbacks``) move to the next model when a circuit is open
or a model's retries are exhausted; open circuits are skipped without a call. Each part is
passed in (or built from :class:`~arbor.core.config.Settings`), so a test can build two
independent clients in one process.

Per-model state (the built model, its attempt runner, its metric label set) exists for every
model id a caller names, so it is bounded: ``llm.max_models`` runners are kept (least
recently used dropped), the registry refuses ids outside ``llm.allowed_models`` and keeps as
many models, and the metrics collapse unconfigured model ids beyond their cap to ``other``.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import structlog
from opentelemetry import trace

from arbor.core.clock import Clock, SystemClock
from arbor.core.config import ModelLimits, Settings
from arbor.core.errors import CircuitOpenError, ProviderError, ProviderHTTPError
from arbor.core.metrics import Metrics
from arbor.core.tracing import make_tracer
from arbor.llm._attempts import AttemptRunner
from arbor.llm._calls import CallAccount, StreamAccumulator
from arbor.llm.breaker import BreakerRegistry
from arbor.llm.budgets import BudgetTracker
from arbor.llm.cache import ResponseCache, cache_key, replay_stream, should_cache
from arbor.llm.model import Model
from arbor.llm.pricing import PriceTable
from arbor.llm.providers.registry import ModelRegistry
from arbor.llm.ratelimit import InMemoryRateLimiter, RateLimiter, Reservation
from arbor.llm.retry import RetryPolicy
from arbor.llm.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    StreamChunk,
)
from arbor.llm.usage import UsageSink

__all__ = ["LLMClient"]

log = structlog.get_logger("arbor.llm")

# HTTP statuses that say the request itself is wrong: another model would refuse it too.
_NO_FALLBACK_STATUSES = frozenset({400, 413, 422})


class LLMClient:
    """Resilient access to any configured model.

    >>> client = LLMClient(settings)                       # doctest: +SKIP
    >>> reply = await client.complete(model="openai:gpt-4o-mini", messages="Hi")  # doctest: +SKIP
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        models: Mapping[str, Model] | None = None,
        registry: ModelRegistry | None = None,
        cache: ResponseCache | None = None,
        limiter: RateLimiter | None = None,
        breakers: BreakerRegistry | None = None,
        budgets: BudgetTracker | None = None,
        prices: PriceTable | None = None,
        metrics: Metrics | None = None,
        tracer: trace.Tracer | None = None,
        usage_sink: UsageSink | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or Settings()
        llm = self.settings.llm
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.registry = registry or ModelRegistry(self.settings)
        self._models: dict[str, Model] = dict(models or {})
        if cache is None and llm.cache.enabled:
            cache = ResponseCache.from_settings(llm.cache, self.settings.home)
        self.cache = cache
        self.limiter = limiter or InMemoryRateLimiter(self.clock)
        self.breakers = breakers or BreakerRegistry(
            llm.breaker, self.clock, on_change=self._breaker_changed
        )
        self.budgets = budgets or BudgetTracker()
        self.prices = prices or PriceTable(self.settings)
        self.retry = RetryPolicy(llm.retry, self.clock, rng or random.Random())
        self.tracer = tracer or make_tracer(
            otlp_endpoint=self.settings.otlp_endpoint, console=self.settings.trace_console
        )
        self._tracing = not isinstance(self.tracer, trace.NoOpTracer)
        self.usage_sink = usage_sink
        self._key_limits: dict[str, ModelLimits] = {}
        self._runners: OrderedDict[str, AttemptRunner] = OrderedDict()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        for model_id in self._configured_models():  # their metrics are never "other"
            provider, _, name = model_id.partition(":")
            self.metrics.pin(provider, name)

    # ---- public API ---------------------------------------------------------------------
    async def complete(
        self,
        request: ChatRequest | None = None,
        /,
        *,
        model: str | None = None,
        messages: str | Sequence[Message | Mapping[str, Any]] | None = None,
        **params: Any,
    ) -> ChatResponse:
        """One reply: through cache, budget, limits, breaker, retries and fallbacks."""
        req = request or self._request(model, messages, params)
        chain = self._chain(req.model)
        for i, model_id in enumerate(chain):
            last = i == len(chain) - 1
            if not last and self.breakers.is_open(model_id):
                log.info("llm.fallback.skip_open", model=model_id)
                continue
            attempt = req if model_id == req.model else req.model_copy(update={"model": model_id})
            try:
                return await self._complete_one(attempt)
            except ProviderError as exc:
                if last or not _falls_back(exc):
                    raise
                log.warning("llm.fallback", model=model_id, error=exc.kind, next=chain[i + 1])
        raise AssertionError("unreachable: the last model either returns or raises")

    async def stream(
        self,
        request: ChatRequest | None = None,
        /,
        *,
        model: str | None = None,
        messages: str | Sequence[Message | Mapping[str, Any]] | None = None,
        **params: Any,
    ) -> AsyncIterator[StreamChunk]:
        """Chunks as they arrive; the last one carries usage and cost. Fallback is possible
        only until the first chunk has been yielded."""
        req = request or self._request(model, messages, params)
        chain = self._chain(req.model)
        for i, model_id in enumerate(chain):
            last = i == len(chain) - 1
            if not last and self.breakers.is_open(model_id):
                continue
            attempt = req if model_id == req.model else req.model_copy(update={"model": model_id})
            started = False
            try:
                async for chunk in self._stream_one(attempt):
                    started = True
                    yield chunk
                return
            except ProviderError as exc:
                if started or last or not _falls_back(exc):
                    raise
                log.warning("llm.fallback", model=model_id, error=exc.kind, next=chain[i + 1])

    async def embed(
        self,
        request: EmbeddingRequest | None = None,
        /,
        *,
        model: str | None = None,
        input: str | Sequence[str] | None = None,
        **params: Any,
    ) -> EmbeddingResponse:
        """Vectors for texts, through budget, limits, breaker and retries (no cache, no
        fallbacks). A model without embeddings raises
        :class:`~arbor.llm.model.EmbeddingsNotSupportedError`."""
        from arbor.llm._embed import embed_call

        if request is None:
            if input is None:
                raise TypeError("embed() needs an EmbeddingRequest or input=")
            texts = [input] if isinstance(input, str) else list(input)
            request = EmbeddingRequest.model_validate(
                {"model": model or self.settings.default_model, "input": texts, **params}
            )
        return await embed_call(self, self._runner(request.model), request)

    def set_key_limits(self, key_id: str, limits: ModelLimits | None) -> None:
        """Per-API-key requests/min and tokens/min, applied on top of model limits."""
        if limits is None:
            self._key_limits.pop(key_id, None)
        else:
            self._key_limits[key_id] = limits

    def model(self, model_id: str) -> Model:
        """The model behind an id: explicitly given ones first, then the registry (which
        may refuse the id, and bounds how many it keeps)."""
        found = self._models.get(model_id)
        return found if found is not None else self.registry.get(model_id)

    async def aclose(self) -> None:
        if self.usage_sink is not None:
            await self.usage_sink.aclose()
        if self.cache is not None:
            await self.cache.aclose()
        await self.registry.aclose()
        while self._closers:
            await self._closers.pop()()

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run ``closer`` at the end of :meth:`aclose` (last added first): for parts the
        client uses but did not build, e.g. the shared Redis backends."""
        self._closers.append(closer)

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- one model ----------------------------------------------------------------------
    async def _complete_one(self, req: ChatRequest) -> ChatResponse:
        runner = self._runner(req.model)
        account = CallAccount.start(self, req, runner.model)
        key, hit = await self._lookup(req)
        if hit is not None:
            return account.cache_hit(hit)
        span = self._span(req)
        try:
            account.reserve_budget()
            response, used = await runner.run(
                req,
                runner.model.complete,
                _response_tokens,
                account.reserve_tokens,
                account.extra_limits,
            )
        except BaseException as exc:
            account.failed(exc, span)
            raise
        response = account.succeeded(response, span)
        if key is not None and self.cache is not None and used is req:
            await self.cache.aput(key, response)
        return response

    async def _stream_one(self, req: ChatRequest) -> AsyncIterator[StreamChunk]:
        runner = self._runner(req.model)
        account = CallAccount.start(self, req, runner.model)
        key, hit = await self._lookup(req)
        if hit is not None:
            async for replayed in replay_stream(account.cache_hit(hit)):
                yield replayed
            return
        span = self._span(req)
        acc = StreamAccumulator(req)
        leases: list[Reservation] = []
        stream: AsyncIterator[StreamChunk] | None = None
        try:
            account.reserve_budget()
            first, stream, leases, used = await runner.open_stream(
                req, account.reserve_tokens, account.extra_limits
            )
            account.first_token()
            chunk: StreamChunk | None = first
            while chunk is not None:
                acc.add(chunk)
                if chunk.usage is not None:  # the final chunk: price it before it leaves
                    response = account.succeeded(acc.response(runner.model), span)
                    chunk.cost_usd = response.cost_usd
                yield chunk
                chunk = await _next_or_none(stream)
            if acc.usage is None:  # the provider reported no usage: estimate and say so
                response = account.succeeded(acc.response(runner.model), span)
                yield StreamChunk(
                    id=acc.id, model=acc.model, usage=response.usage, cost_usd=response.cost_usd
                )
        except BaseException as exc:
            partial = acc.partial_response(runner.model)
            if not acc.usage:
                account.failed(exc, span, partial=partial)
            await runner.settle(leases, partial.usage.total_tokens if partial else 0)
            raise
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:  # the consumer may have stopped early
                await close()
        await runner.settle(leases, response.usage.total_tokens)
        if key is not None and self.cache is not None and used is req:
            await self.cache.aput(key, response)

    # ---- helpers ------------------------------------------------------------------------
    def _request(
        self,
        model: str | None,
        messages: str | Sequence[Message | Mapping[str, Any]] | None,
        params: dict[str, Any],
    ) -> ChatRequest:
        if messages is None:
            raise TypeError("complete() needs a ChatRequest or messages=")
        msgs = [Message.user(messages)] if isinstance(messages, str) else list(messages)
        return ChatRequest.model_validate(
            {"model": model or self.settings.default_model, "messages": msgs, **params}
        )

    def _chain(self, model_id: str) -> list[str]:
        return [model_id, *self.settings.llm.fallbacks.get(model_id, ())]

    async def _lookup(self, req: ChatRequest) -> tuple[str | None, ChatResponse | None]:
        """The cache key (None when this request is not cacheable) and a hit, if any."""
        if self.cache is None or not should_cache(req, self.settings.llm.cache):
            return None, None
        key = cache_key(req)
        hit = await self.cache.aget(key)
        if hit is None:
            self.metrics.cache_miss()
        return key, hit

    def _runner(self, model_id: str) -> AttemptRunner:
        runner = self._runners.get(model_id)
        if runner is not None:
            self._runners.move_to_end(model_id)
        else:
            provider, _, name = model_id.partition(":")
            runner = AttemptRunner(
                model_id=model_id,
                model=self.model(model_id),
                limits=self._limits_for(model_id),
                limiter=self.limiter,
                breakers=self.breakers,
                retry=self.retry,
                retry_settings=self.settings.llm.retry,
                clock=self.clock,
                metrics=self.metrics.model(provider, name),
                total_timeout=self.settings.llm.timeouts.total,
            )
            self._runners[model_id] = runner
            if len(self._runners) > self.settings.llm.max_models:
                self._runners.popitem(last=False)  # stateless: rebuilt on its next call
        return runner

    def _configured_models(self) -> Iterator[str]:
        """Model ids the deployment names itself (settings and explicit models)."""
        llm = self.settings.llm
        yield self.settings.default_model
        yield from self._models
        for model_id, chain in llm.fallbacks.items():
            yield model_id
            yield from chain
        yield from llm.limits
        yield from llm.prices
        yield from llm.allowed_models or ()

    def _limits_for(self, model_id: str) -> list[tuple[str, ModelLimits]]:
        table = self.settings.llm.limits
        provider = model_id.partition(":")[0]
        for k in (model_id, f"{provider}:*", "*"):
            if k in table:
                return [(model_id, table[k])]
        return []

    def key_limits(self, model_id: str, key_id: str | None) -> list[tuple[str, ModelLimits]]:
        """The API key's limits for a call to ``model_id``: one window per key across all
        models (per model, naming another model id would buy a fresh allowance)."""
        if key_id is None or key_id not in self._key_limits:
            return []
        return [(f"key:{key_id}", self._key_limits[key_id])]

    def _span(self, req: ChatRequest) -> trace.Span | None:
        if not self._tracing:
            return None
        from arbor.llm._calls import start_span

        return start_span(self.tracer, req)

    def _breaker_changed(self, key: str, state: str) -> None:
        provider, _, name = key.partition(":")
        self.metrics.set_breaker(provider, name, state)
        log.warning("llm.breaker", model=key, state=state)


async def _next_or_none(stream: AsyncIterator[StreamChunk]) -> StreamChunk | None:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


def _response_tokens(response: ChatResponse) -> int:
    return response.usage.total_tokens


def _falls_back(exc: ProviderError) -> bool:
    if isinstance(exc, CircuitOpenError):
        return True
    if isinstance(exc, ProviderHTTPError) and exc.status_code in _NO_FALLBACK_STATUSES:
        return False
    return True
