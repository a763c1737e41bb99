"""Prometheus metrics for the LLM layer (and, later, the service and batches).

Each :class:`Metrics` owns its own ``CollectorRegistry`` — no process-global registry — so two
runtimes in one process (or two tests) never share counters. Label children are cached per
(provider, model) so the hot path does one dict lookup instead of several ``labels()`` calls.

Model ids come from requests, so label cardinality is capped: pinned (configured) models
always get their own labels, others only until ``max_models`` distinct ones have been seen;
later ones are counted under model ``other`` (and provider ``other`` if that is new too).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["BREAKER_STATES", "OTHER", "Metrics", "ModelMetrics"]

#: The label value unpinned models beyond the cap are counted under.
OTHER = "other"

#: Gauge values for circuit-breaker states.
BREAKER_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass(slots=True)
class ModelMetrics:
    """Pre-bound metric children for one provider/model pair."""

    ok: Counter
    failed: Counter
    retries: Counter
    tokens_in: Counter
    tokens_out: Counter
    cost: Counter
    latency: Histogram
    ttft: Histogram


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        namespace: str = "arbor",
        *,
        max_models: int = 100,
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.max_models = max_models
        self._pinned: set[tuple[str, str]] = set()
        self._labelled: set[tuple[str, str]] = set()
        self._providers: set[str] = set()  # of the pinned and labelled models
        ns = namespace
        r = self.registry
        self.requests = Counter(
            "llm_requests",
            "LLM calls by outcome",
            ["provider", "model", "status"],
            namespace=ns,
            registry=r,
        )
        self.errors = Counter(
            "llm_errors",
            "LLM errors by kind",
            ["provider", "model", "kind"],
            namespace=ns,
            registry=r,
        )
        self.retries = Counter(
            "llm_retries", "LLM attempts retried", ["provider", "model"], namespace=ns, registry=r
        )
        self.breaker_state = Gauge(
            "llm_breaker_state",
            "Circuit state: 0 closed, 1 half-open, 2 open",
            ["provider", "model"],
            namespace=ns,
            registry=r,
        )
        self.cache = Counter(
            "llm_cache", "Response cache lookups", ["result", "tier"], namespace=ns, registry=r
        )
        self.tokens = Counter(
            "llm_tokens",
            "Tokens by direction",
            ["provider", "model", "direction"],
            namespace=ns,
            registry=r,
        )
        self.cost = Counter(
            "llm_cost_usd", "Cost in USD", ["provider", "model"], namespace=ns, registry=r
        )
        self.latency = Histogram(
            "llm_latency_seconds",
            "Latency of a whole LLM call (with retries)",
            ["provider", "model"],
            buckets=_LATENCY_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self.ttft = Histogram(
            "llm_time_to_first_token_seconds",
            "Time to the first streamed chunk",
            ["provider", "model"],
            buckets=_LATENCY_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self._cache_hit = {t: self.cache.labels("hit", t) for t in ("memory", "disk", "redis")}
        self._cache_miss = self.cache.labels("miss", "all")
        self._per_model: dict[tuple[str, str], ModelMetrics] = {}

    def pin(self, provider: str, model: str) -> None:
        """Always label ``provider:model`` by its own name (a configured model)."""
        self._pinned.add((provider, model))
        self._providers.add(provider)

    def labels_for(self, provider: str, model: str) -> tuple[str, str]:
        """The label values ``provider:model`` is counted under (see the module docstring)."""
        key = (provider, model)
        if key in self._labelled or key in self._pinned:
            return key
        if len(self._labelled) < self.max_models:
            self._labelled.add(key)
            self._providers.add(provider)
            return key
        return (provider if provider in self._providers else OTHER, OTHER)

    def model(self, provider: str, model: str) -> ModelMetrics:
        m = self._per_model.get((provider, model))
        if m is None:
            key = provider, model = self.labels_for(provider, model)
            m = self._per_model.get(key)
        if m is None:
            m = ModelMetrics(
                ok=self.requests.labels(provider, model, "ok"),
                failed=self.requests.labels(provider, model, "error"),
                retries=self.retries.labels(provider, model),
                tokens_in=self.tokens.labels(provider, model, "input"),
                tokens_out=self.tokens.labels(provider, model, "output"),
                cost=self.cost.labels(provider, model),
                latency=self.latency.labels(provider, model),
                ttft=self.ttft.labels(provider, model),
            )
            self._per_model[key] = m
        return m

    def cache_hit(self, tier: str) -> None:
        child = self._cache_hit.get(tier)
        (child or self.cache.labels("hit", tier)).inc()

    def cache_miss(self) -> None:
        self._cache_miss.inc()

    def error(self, provider: str, model: str, kind: str) -> None:
        self.errors.labels(*self.labels_for(provider, model), kind).inc()

    def set_breaker(self, provider: str, model: str, state: str) -> None:
        labels = self.labels_for(provider, model)
        self.breaker_state.labels(*labels).set(BREAKER_STATES.get(state, -1.0))

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
