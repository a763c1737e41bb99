"""Accounting for one call: budget reservation, cost, usage record, metrics and span.

Kept apart from the pipeline so the pipeline reads as its order of steps and the
book-keeping is written once for plain calls, streams and cache hits.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from arbor.core.errors import ArborError
from arbor.core.metrics import ModelMetrics
from arbor.core.tracing import GenAI
from arbor.llm._accounting import budget_scopes, record_usage
from arbor.llm.budgets import BudgetReservation
from arbor.llm.model import Model
from arbor.llm.types import (
    ChatRequest,
    ChatResponse,
    Message,
    StreamChunk,
    ToolCall,
    Usage,
)

if TYPE_CHECKING:
    from arbor.llm.client import LLMClient

__all__ = ["CallAccount", "StreamAccumulator", "start_span"]

#: Output tokens assumed for budget and TPM reservation when a request sets no max_tokens.
DEFAULT_OUTPUT_RESERVE = 1024


def start_span(tracer: trace.Tracer, req: ChatRequest) -> trace.Span:
    provider, _, name = req.model.partition(":")
    span = tracer.start_span(f"chat {name}", kind=trace.SpanKind.CLIENT)
    span.set_attribute(GenAI.OPERATION, "chat")
    span.set_attribute(GenAI.SYSTEM, provider)
    span.set_attribute(GenAI.PROVIDER, provider)
    span.set_attribute(GenAI.REQUEST_MODEL, name)
    if req.max_tokens is not None:
        span.set_attribute(GenAI.REQUEST_MAX_TOKENS, req.max_tokens)
    if req.temperature is not None:
        span.set_attribute(GenAI.REQUEST_TEMPERATURE, req.temperature)
    if req.top_p is not None:
        span.set_attribute(GenAI.REQUEST_TOP_P, req.top_p)
    return span


@dataclass(slots=True)
class CallAccount:
    client: LLMClient
    request: ChatRequest
    model: Model
    metrics: ModelMetrics
    started: float
    extra_limits: list[Any]
    _input_tokens: int | None = None
    _budget: BudgetReservation | None = None
    _ttft_ms: float | None = None

    @classmethod
    def start(cls, client: LLMClient, request: ChatRequest, model: Model) -> CallAccount:
        provider, _, name = request.model.partition(":")
        return cls(
            client=client,
            request=request,
            model=model,
            metrics=client.metrics.model(provider, name),
            started=time.perf_counter(),
            extra_limits=client.key_limits(request.model, request.context.key_id),
        )

    # -- estimates, computed only when a limit or budget needs them ------------------------
    def input_tokens(self) -> int:
        if self._input_tokens is None:
            self._input_tokens = self.model.count_tokens(self.request.messages)
        return self._input_tokens

    def reserve_tokens(self) -> int:
        return self.input_tokens() + (self.request.max_tokens or DEFAULT_OUTPUT_RESERVE)

    def reserve_budget(self) -> None:
        budgets = self.client.budgets
        scopes = budget_scopes(self.request.context)
        if not budgets.has_limits(scopes):
            return
        provider, _, name = self.request.model.partition(":")
        estimate = self.client.prices.estimate(
            provider,
            name,
            self.input_tokens(),
            self.request.max_tokens or DEFAULT_OUTPUT_RESERVE,
        )
        self._budget = budgets.reserve(scopes, estimate)

    def first_token(self) -> None:
        self._ttft_ms = (time.perf_counter() - self.started) * 1000.0
        self.metrics.ttft.observe(self._ttft_ms / 1000.0)

    # -- outcomes -----------------------------------------------------------------------
    def cache_hit(self, hit: ChatResponse) -> ChatResponse:
        tier = self.client.cache.last_tier if self.client.cache is not None else "memory"
        self.client.metrics.cache_hit(tier)
        latency = (time.perf_counter() - self.started) * 1000.0
        # The cache hands out a fresh object per hit, so it is ours to mark.
        hit.cached, hit.cost_usd, hit.latency_ms = True, 0.0, latency
        self._record(hit.usage, 0.0, latency, status="ok", cached=True)
        return hit

    def succeeded(self, response: ChatResponse, span: trace.Span | None) -> ChatResponse:
        provider, _, name = self.request.model.partition(":")
        usage = response.usage
        cost = self.client.prices.cost(provider, name, usage)
        latency = (time.perf_counter() - self.started) * 1000.0
        response.cost_usd = cost
        response.latency_ms = latency
        m = self.metrics
        m.ok.inc()
        m.tokens_in.inc(usage.input_tokens)
        m.tokens_out.inc(usage.output_tokens)
        if cost:
            m.cost.inc(cost)
        m.latency.observe(latency / 1000.0)
        if self._budget is not None:
            self.client.budgets.commit(self._budget, cost)
        self._record(usage, cost, latency, status="ok", response_id=response.id)
        if span is not None:
            span.set_attribute(GenAI.RESPONSE_ID, response.id)
            span.set_attribute(GenAI.RESPONSE_MODEL, response.model or name)
            span.set_attribute(GenAI.RESPONSE_FINISH_REASONS, [response.finish_reason or ""])
            span.set_attribute(GenAI.USAGE_INPUT, usage.input_tokens)
            span.set_attribute(GenAI.USAGE_OUTPUT, usage.output_tokens)
            span.end()
        return response

    def failed(
        self,
        exc: BaseException,
        span: trace.Span | None,
        partial: ChatResponse | None = None,
    ) -> None:
        provider, _, name = self.request.model.partition(":")
        if isinstance(exc, ArborError):
            kind = exc.kind
        elif isinstance(exc, GeneratorExit | asyncio.CancelledError):
            kind = "cancelled"
        else:
            kind = type(exc).__name__
        latency = (time.perf_counter() - self.started) * 1000.0
        usage = partial.usage if partial is not None else Usage()
        cost = self.client.prices.cost(provider, name, usage) if partial is not None else 0.0
        self.metrics.failed.inc()
        self.client.metrics.error(provider, name, kind)
        self.metrics.latency.observe(latency / 1000.0)
        if self._budget is not None:
            self.client.budgets.commit(self._budget, cost)
        self._record(usage, cost, latency, status=kind)
        if span is not None:
            span.set_attribute(GenAI.ERROR_TYPE, kind)
            span.set_status(Status(StatusCode.ERROR, kind))
            span.end()

    def _record(
        self,
        usage: Usage,
        cost: float,
        latency_ms: float,
        *,
        status: str,
        cached: bool = False,
        response_id: str | None = None,
    ) -> None:
        record_usage(
            self.client.usage_sink,
            self.request.model,
            self.request.context,
            usage,
            cost=cost,
            latency_ms=latency_ms,
            status=status,
            cached=cached,
            response_id=response_id,
        )


@dataclass(slots=True)
class StreamAccumulator:
    """Builds the whole response from stream chunks, so a stream is accounted, cached and
    (when cut off) estimated exactly like a plain call."""

    request: ChatRequest
    id: str = ""
    model: str = ""
    parts: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage | None = None

    def add(self, chunk: StreamChunk) -> None:
        if chunk.id:
            self.id = chunk.id
        if chunk.model:
            self.model = chunk.model
        if chunk.content:
            self.parts.append(chunk.content)
        for d in chunk.tool_calls or ():
            call = self.calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = d.id or call["id"]
            call["name"] = d.name or call["name"]
            call["arguments"] += d.arguments or ""
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage

    def _message(self) -> Message:
        calls = [ToolCall(**self.calls[i]) for i in sorted(self.calls)] or None
        return Message.assistant("".join(self.parts) or None, tool_calls=calls)

    def _estimated_usage(self, model: Model) -> Usage:
        message = self._message()
        overhead = model.count_tokens([Message.assistant("")])
        out = (
            max(0, model.count_tokens([message]) - overhead)
            if message.content or message.tool_calls
            else 0
        )
        return Usage(
            input_tokens=model.count_tokens(self.request.messages),
            output_tokens=out,
            estimated=True,
        )

    def response(self, model: Model) -> ChatResponse:
        return ChatResponse.model_construct(
            id=self.id,
            model=self.model,
            message=self._message(),
            finish_reason=self.finish_reason,  # type: ignore[arg-type]
            usage=self.usage if self.usage is not None else self._estimated_usage(model),
            cost_usd=0.0,
            latency_ms=0.0,
            cached=False,
        )

    def partial_response(self, model: Model) -> ChatResponse | None:
        """What arrived before a failure, with usage estimated if the provider sent none."""
        if not self.parts and not self.calls and self.usage is None:
            return None
        return self.response(model)
