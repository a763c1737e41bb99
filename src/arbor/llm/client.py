"""``LLMClient``: the one pipeline every agent, batch and request goes through.

Order, for plain and streamed calls alike::

    cache → budget reservation → rate limiter → circuit breaker → retry → provider
          → usage/cost → budget commit → cache fill → metrics/trace

(the steps: :mod:`arbor.llm._pipeline`). Each part is passed in (or built from
:class:`~arbor.core.config.Settings`), so a test can build two independent clients in one
process.

A client is a thin front over those parts (:class:`~arbor.llm._parts.ClientParts`) and a
call context. :meth:`LLMClient.view` makes another front over the same parts for one API key,
run, batch or batch item: it stamps its ids on the requests that name none and hands each
finished call's usage record to its observer, through the pipeline's own accounting. A view
costs a few attribute assignments (no limiter, breaker or cache is rebuilt), so one per batch
item is cheap.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from opentelemetry import trace

from arbor.core.clock import Clock
from arbor.core.config import ModelLimits, Settings
from arbor.core.metrics import Metrics
from arbor.llm import _pipeline
from arbor.llm._parts import ClientParts, Limits
from arbor.llm.breaker import BreakerRegistry
from arbor.llm.budgets import BudgetTracker
from arbor.llm.cache import ResponseCache
from arbor.llm.model import Model
from arbor.llm.pricing import PriceTable
from arbor.llm.providers.registry import ModelRegistry
from arbor.llm.ratelimit import RateLimiter
from arbor.llm.retry import RetryPolicy
from arbor.llm.types import (
    CallContext,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    StreamChunk,
)
from arbor.llm.usage import UsageObserver, UsageSink

__all__ = ["LLMClient"]

_Stamped = TypeVar("_Stamped", ChatRequest, EmbeddingRequest)


class LLMClient:
    """Resilient access to any configured model.

    ``settings`` choose the defaults of every part not given: ``models`` (served before the
    provider ``registry``), the response ``cache`` (None and ``llm.cache.enabled`` builds
    one), the rate ``limiter``, the circuit ``breakers``, the spending ``budgets``, the
    ``prices``, the Prometheus ``metrics``, the OpenTelemetry ``tracer``, where usage
    records go (``usage_sink``), the ``clock`` and the retry jitter's ``rng``. The client
    owns them: :meth:`aclose` closes the sink, the cache and the registry's models.

    >>> client = LLMClient(settings)                       # doctest: +SKIP
    >>> reply = await client.complete(model="openai:gpt-4o-mini", messages="Hi")  # doctest: +SKIP
    """

    __slots__ = ("_observers", "_owner", "_parts", "_stamps")

    _parts: ClientParts
    #: CallContext fields this front fills on requests that leave them empty.
    _stamps: dict[str, str]
    _observers: tuple[UsageObserver, ...]
    #: Whether closing this front closes the parts (the client that built them).
    _owner: bool

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
        parts = ClientParts.build(
            settings,
            models=models,
            registry=registry,
            cache=cache,
            limiter=limiter,
            breakers=breakers,
            budgets=budgets,
            prices=prices,
            metrics=metrics,
            tracer=tracer,
            usage_sink=usage_sink,
            clock=clock,
            rng=rng,
        )
        self._bind(parts, {}, (), owner=True)

    @classmethod
    def _over(
        cls, parts: ClientParts, stamps: dict[str, str], observers: tuple[UsageObserver, ...]
    ) -> LLMClient:
        """Another front over ``parts`` (the constructor builds new parts; a view must not)."""
        front = cls.__new__(cls)
        front._bind(parts, stamps, observers, owner=False)
        return front

    def _bind(
        self,
        parts: ClientParts,
        stamps: dict[str, str],
        observers: tuple[UsageObserver, ...],
        *,
        owner: bool,
    ) -> None:
        self._parts = parts
        self._stamps = stamps
        self._observers = observers
        self._owner = owner

    # ---- calls --------------------------------------------------------------------------
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
        if self._stamps:
            req = self._stamp(req)
        return await _pipeline.complete(self._parts, req, self._observers)

    def stream(
        self,
        request: ChatRequest | None = None,
        /,
        *,
        model: str | None = None,
        messages: str | Sequence[Message | Mapping[str, Any]] | None = None,
        **params: Any,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Chunks as they arrive; the last one carries usage and cost. Fallback is possible
        only until the first chunk has been yielded. (The request is checked at once; the
        call starts with the first ``anext``.)"""
        req = request or self._request(model, messages, params)
        if self._stamps:
            req = self._stamp(req)
        return _pipeline.stream(self._parts, req, self._observers)

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
        if request is None:
            if input is None:
                raise TypeError("embed() needs an EmbeddingRequest or input=")
            texts = [input] if isinstance(input, str) else list(input)
            request = EmbeddingRequest.model_validate(
                {"model": model or self.settings.default_model, "input": texts, **params}
            )
        if self._stamps:
            request = self._stamp(request)
        return await _pipeline.embed(self._parts, request, self._observers)

    # ---- views --------------------------------------------------------------------------
    def view(
        self,
        *,
        key_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        batch_id: str | None = None,
        on_usage: UsageObserver | None = None,
    ) -> LLMClient:
        """A front over this client's parts (the same limiter, breakers, budgets, caches,
        usage sink, models and metrics) that fills the given ids on each request leaving
        them empty, and calls ``on_usage`` with the usage record of each call it makes as
        the call ends (a success, a cache hit or a failure).

        A view of a view stamps both views' ids (the newer one's where both set a field) and
        calls both observers. Closing a view releases nothing: the client that built the
        parts owns them.
        """
        given = (("key_id", key_id), ("agent_id", agent_id), ("run_id", run_id))
        added = {k: v for k, v in (*given, ("batch_id", batch_id)) if v is not None}
        stamps = {**self._stamps, **added} if added else self._stamps
        observers = self._observers if on_usage is None else (*self._observers, on_usage)
        return LLMClient._over(self._parts, stamps, observers)

    @property
    def context(self) -> CallContext:
        """What this front stamps on requests (all None for the client itself)."""
        return CallContext.model_validate(self._stamps)

    def _stamp(self, req: _Stamped) -> _Stamped:
        ctx = req.context
        missing = {k: v for k, v in self._stamps.items() if getattr(ctx, k) is None}
        if not missing:
            return req
        return req.model_copy(update={"context": ctx.model_copy(update=missing)})

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

    # ---- the shared parts -----------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self._parts.settings

    @property
    def clock(self) -> Clock:
        return self._parts.clock

    @property
    def metrics(self) -> Metrics:
        return self._parts.metrics

    @property
    def registry(self) -> ModelRegistry:
        return self._parts.registry

    @property
    def cache(self) -> ResponseCache | None:
        return self._parts.cache

    @property
    def limiter(self) -> RateLimiter:
        return self._parts.limiter

    @property
    def breakers(self) -> BreakerRegistry:
        return self._parts.breakers

    @property
    def budgets(self) -> BudgetTracker:
        return self._parts.budgets

    @property
    def prices(self) -> PriceTable:
        return self._parts.prices

    @property
    def retry(self) -> RetryPolicy:
        return self._parts.retry

    @property
    def tracer(self) -> trace.Tracer:
        return self._parts.tracer

    @property
    def usage_sink(self) -> UsageSink | None:
        return self._parts.usage_sink

    def set_key_limits(self, key_id: str, limits: ModelLimits | None) -> None:
        """Per-API-key requests/min and tokens/min, applied on top of model limits (for
        every front over these parts)."""
        if limits is None:
            self._parts.key_limits.pop(key_id, None)
        else:
            self._parts.key_limits[key_id] = limits

    def key_limits(self, model_id: str, key_id: str | None) -> Limits:
        """The API key's limits for a call to ``model_id``: one window per key across all
        models (per model, naming another model id would buy a fresh allowance)."""
        return self._parts.limits_for_key(key_id)

    def model(self, model_id: str) -> Model:
        """The model behind an id: explicitly given ones first, then the registry (which
        may refuse the id, and bounds how many it keeps)."""
        return self._parts.model(model_id)

    # ---- lifetime -------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the parts (sink, cache, models, then the :meth:`on_close` closers); a view
        releases nothing."""
        if self._owner:
            await self._parts.aclose()

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run ``closer`` at the end of the owner's :meth:`aclose` (last added first): for
        parts the client uses but did not build, e.g. the shared Redis backends."""
        self._parts.closers.append(closer)

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
