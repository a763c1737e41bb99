"""The parts of one LLM client that every front of it shares.

An :class:`~arbor.llm.client.LLMClient` and each view of it (per API key, per run, per
batch item) are fronts over one :class:`ClientParts`: the same limiter, breakers, budgets,
caches, usage sink, models and metrics, so a call through a view counts against the very
limits and budgets of its owner. Building the parts (a cache that may open SQLite, a
breaker registry, a tracer) happens once per owner client; a view costs a few attribute
assignments.

The pipeline (:mod:`arbor.llm._pipeline`) and its accounting (:mod:`arbor.llm._calls`)
read what they need from here, never from the client, so none of them imports it.

Per-model state (the built model, its attempt runner, its metric label set) exists for every
model id a caller names, so it is bounded: ``llm.max_models`` runners are kept (least
recently used dropped), the registry refuses ids outside ``llm.allowed_models`` and keeps as
many models, and the metrics collapse unconfigured model ids beyond their cap to ``other``.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field

import structlog
from opentelemetry import trace

from arbor.core.clock import Clock, SystemClock
from arbor.core.config import ModelLimits, Settings
from arbor.core.metrics import Metrics
from arbor.core.tracing import make_tracer
from arbor.llm._attempts import AttemptRunner
from arbor.llm.breaker import BreakerRegistry
from arbor.llm.budgets import BudgetTracker
from arbor.llm.cache import ResponseCache
from arbor.llm.model import Model
from arbor.llm.pricing import PriceTable
from arbor.llm.providers.registry import ModelRegistry
from arbor.llm.ratelimit import InMemoryRateLimiter, RateLimiter
from arbor.llm.retry import RetryPolicy
from arbor.llm.usage import UsageSink

__all__ = ["ClientParts", "Limits"]

log = structlog.get_logger("arbor.llm")

#: Limiter keys and the limits applied under each.
Limits = list[tuple[str, ModelLimits]]


@dataclass(slots=True, eq=False)
class ClientParts:
    """What a client's pipeline runs on. Build it with :meth:`build`; the owner client
    closes it (:meth:`aclose`), its views never do.

    ``models`` are explicitly given models (they win over the ``registry``); ``key_limits``
    are the per-API-key requests/min and tokens/min; ``runners`` the bounded per-model
    attempt runners; ``closers`` what :meth:`aclose` runs last (last added first).
    """

    settings: Settings
    clock: Clock
    metrics: Metrics
    registry: ModelRegistry
    models: dict[str, Model]
    cache: ResponseCache | None
    limiter: RateLimiter
    breakers: BreakerRegistry
    budgets: BudgetTracker
    prices: PriceTable
    retry: RetryPolicy
    tracer: trace.Tracer
    usage_sink: UsageSink | None
    #: Whether spans are worth starting (a no-op tracer needs none).
    tracing: bool = field(init=False)
    key_limits: dict[str, ModelLimits] = field(default_factory=dict)
    runners: OrderedDict[str, AttemptRunner] = field(default_factory=OrderedDict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tracing = not isinstance(self.tracer, trace.NoOpTracer)
        for model_id in self._configured_models():  # their metrics are never "other"
            provider, _, name = model_id.partition(":")
            self.metrics.pin(provider, name)

    @classmethod
    def build(
        cls,
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
    ) -> ClientParts:
        """The given parts, and the in-process defaults ``settings`` choose for the rest."""
        settings = settings or Settings()
        llm = settings.llm
        clock = clock or SystemClock()
        metrics = metrics or Metrics()
        if cache is None and llm.cache.enabled:
            cache = ResponseCache.from_settings(llm.cache, settings.home)

        def on_change(key: str, state: str) -> None:
            breaker_changed(metrics, key, state)

        return cls(
            settings=settings,
            clock=clock,
            metrics=metrics,
            registry=registry or ModelRegistry(settings),
            models=dict(models or {}),
            cache=cache,
            limiter=limiter or InMemoryRateLimiter(clock),
            breakers=breakers or BreakerRegistry(llm.breaker, clock, on_change=on_change),
            budgets=budgets or BudgetTracker(),
            prices=prices or PriceTable(settings),
            retry=RetryPolicy(llm.retry, clock, rng or random.Random()),
            tracer=tracer
            or make_tracer(otlp_endpoint=settings.otlp_endpoint, console=settings.trace_console),
            usage_sink=usage_sink,
        )

    # ---- models and their runners ------------------------------------------------------
    def model(self, model_id: str) -> Model:
        """Explicitly given models first, then the registry (which may refuse the id, and
        bounds how many it keeps)."""
        found = self.models.get(model_id)
        return found if found is not None else self.registry.get(model_id)

    def runner(self, model_id: str) -> AttemptRunner:
        runner = self.runners.get(model_id)
        if runner is not None:
            self.runners.move_to_end(model_id)
            return runner
        provider, _, name = model_id.partition(":")
        llm = self.settings.llm
        runner = AttemptRunner(
            model_id=model_id,
            model=self.model(model_id),
            limits=self._limits_for(model_id),
            limiter=self.limiter,
            breakers=self.breakers,
            retry=self.retry,
            retry_settings=llm.retry,
            clock=self.clock,
            metrics=self.metrics.model(provider, name),
            total_timeout=llm.timeouts.total,
        )
        self.runners[model_id] = runner
        if len(self.runners) > llm.max_models:
            self.runners.popitem(last=False)  # stateless: rebuilt on its next call
        return runner

    def chain(self, model_id: str) -> list[str]:
        """``model_id`` and its fallbacks, in order."""
        return [model_id, *self.settings.llm.fallbacks.get(model_id, ())]

    # ---- limits -----------------------------------------------------------------------
    def limits_for_key(self, key_id: str | None) -> Limits:
        """The API key's limits: one window per key across all models (per model, naming
        another model id would buy a fresh allowance)."""
        if key_id is None or key_id not in self.key_limits:
            return []
        return [(f"key:{key_id}", self.key_limits[key_id])]

    def _limits_for(self, model_id: str) -> Limits:
        table = self.settings.llm.limits
        provider = model_id.partition(":")[0]
        for k in (model_id, f"{provider}:*", "*"):
            if k in table:
                return [(model_id, table[k])]
        return []

    def _configured_models(self) -> Iterator[str]:
        """Model ids the deployment names itself (settings and explicit models)."""
        llm = self.settings.llm
        yield self.settings.default_model
        yield from self.models
        for model_id, chain in llm.fallbacks.items():
            yield model_id
            yield from chain
        yield from llm.limits
        yield from llm.prices
        yield from llm.allowed_models or ()

    # ---- events and lifetime -----------------------------------------------------------
    def breaker_changed(self, key: str, state: str) -> None:
        """Metrics and a log line for a circuit's transition (a shared registry's sync
        forwards the transitions other processes decided)."""
        breaker_changed(self.metrics, key, state)

    async def aclose(self) -> None:
        if self.usage_sink is not None:
            await self.usage_sink.aclose()
        if self.cache is not None:
            await self.cache.aclose()
        await self.registry.aclose()
        while self.closers:
            await self.closers.pop()()


def breaker_changed(metrics: Metrics, key: str, state: str) -> None:
    provider, _, name = key.partition(":")
    metrics.set_breaker(provider, name, state)
    log.warning("llm.breaker", model=key, state=state)
