"""Accounting for one call: budget reservation, cost, usage record, metrics and span.

Kept apart from the pipeline so the pipeline reads as its order of steps and the
book-keeping is written once for plain calls, streams, cache hits and embeddings. It reads
the client's shared parts (:class:`~arbor.llm._parts.ClientParts`), never the client, and
hands each finished call's usage record to the usage sink and to the observers of the
front the call came through (a view metering a batch item, say).

Embeddings are accounted like chat calls with no output: nothing is reserved for output
tokens, none are recorded, and there is no cache hit to count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from arbor.core.errors import ArborError
from arbor.core.metrics import ModelMetrics
from arbor.core.tracing import GenAI
from arbor.llm._accounting import budget_scopes, record_usage
from arbor.llm._parts import ClientParts, Limits
from arbor.llm.budgets import BudgetReservation
from arbor.llm.model import Model
from arbor.llm.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    StreamChunk,
    ToolCall,
    Usage,
)
from arbor.llm.usage import UsageObserver

__all__ = ["DEFAULT_OUTPUT_RESERVE", "CallAccount", "StreamAccumulator", "failure_kind"]

#: Output tokens assumed for budget and TPM reservation when a request sets no max_tokens.
DEFAULT_OUTPUT_RESERVE = 1024

Request = ChatRequest | EmbeddingRequest
#: What a finished call is priced and timed on.
Response = TypeVar("Response", ChatResponse, EmbeddingResponse)


def failure_kind(exc: BaseException) -> str:
    """The ``status`` a failed call's usage row and error metric carry."""
    if isinstance(exc, ArborError):
        return exc.kind
    if isinstance(exc, GeneratorExit | asyncio.CancelledError):
        return "cancelled"
    return type(exc).__name__


def _start_span(tracer: trace.Tracer, req: Request) -> trace.Span:
    provider, _, name = req.model.partition(":")
    operation = "chat" if isinstance(req, ChatRequest) else "embeddings"
    span = tracer.start_span(f"{operation} {name}", kind=trace.SpanKind.CLIENT)
    span.set_attribute(GenAI.OPERATION, operation)
    span.set_attribute(GenAI.SYSTEM, provider)
    span.set_attribute(GenAI.PROVIDER, provider)
    span.set_attribute(GenAI.REQUEST_MODEL, name)
    if isinstance(req, ChatRequest):
        if req.max_tokens is not None:
            span.set_attribute(GenAI.REQUEST_MAX_TOKENS, req.max_tokens)
        if req.temperature is not None:
            span.set_attribute(GenAI.REQUEST_TEMPERATURE, req.temperature)
        if req.top_p is not None:
            span.set_attribute(GenAI.REQUEST_TOP_P, req.top_p)
    return span


@dataclass(slots=True)
class CallAccount:
    """The book-keeping of one call of ``request`` to ``model`` on ``parts``; ``observers``
    see its usage record when it ends (whichever way)."""

    parts: ClientParts
    request: Request
    model: Model
    observers: Sequence[UsageObserver]
    metrics: ModelMetrics
    started: float
    #: The API key's limits, applied on top of the model's.
    extra_limits: Limits
    #: Output tokens reserved against budgets and tokens/min (none for embeddings).
    output_reserve: int
    _input_tokens: int | None = None
    _budget: BudgetReservation | None = None
    _span: trace.Span | None = None

    @classmethod
    def start(
        cls,
        parts: ClientParts,
        request: Request,
        model: Model,
        observers: Sequence[UsageObserver] = (),
    ) -> CallAccount:
        provider, _, name = request.model.partition(":")
        if isinstance(request, ChatRequest):
            output_reserve = request.max_tokens or DEFAULT_OUTPUT_RESERVE
        else:
            output_reserve = 0
        return cls(
            parts=parts,
            request=request,
            model=model,
            observers=observers,
            metrics=parts.metrics.model(provider, name),
            started=time.perf_counter(),
            extra_limits=parts.limits_for_key(request.context.key_id),
            output_reserve=output_reserve,
        )

    # -- estimates, computed only when a limit or budget needs them ------------------------
    def input_tokens(self) -> int:
        if self._input_tokens is None:
            req = self.request
            if isinstance(req, ChatRequest):
                messages = req.messages
            else:
                messages = [Message.user(text) for text in req.input]
            self._input_tokens = self.model.count_tokens(messages)
        return self._input_tokens

    def reserve_tokens(self) -> int:
        return self.input_tokens() + self.output_reserve

    def reserve_budget(self) -> None:
        budgets = self.parts.budgets
        scopes = budget_scopes(self.request.context)
        if not budgets.has_limits(scopes):
            return
        provider, _, name = self.request.model.partition(":")
        estimate = self.parts.prices.estimate(
            provider, name, self.input_tokens(), self.output_reserve
        )
        self._budget = budgets.reserve(scopes, estimate)

    def open_span(self) -> None:
        """Start the call's span (after the cache: a hit has none)."""
        if self.parts.tracing:
            self._span = _start_span(self.parts.tracer, self.request)

    def first_token(self) -> None:
        self.metrics.ttft.observe(time.perf_counter() - self.started)

    # -- outcomes -----------------------------------------------------------------------
    def cache_hit(self, hit: ChatResponse) -> ChatResponse:
        cache = self.parts.cache
        self.parts.metrics.cache_hit(cache.last_tier if cache is not None else "memory")
        latency = (time.perf_counter() - self.started) * 1000.0
        # The cache hands out a fresh object per hit, so it is ours to mark.
        hit.cached, hit.cost_usd, hit.latency_ms = True, 0.0, latency
        self._record(hit.usage, 0.0, latency, status="ok", cached=True)
        return hit

    def succeeded(self, response: Response) -> Response:
        """Price and time ``response`` (in place), and account for it."""
        provider, _, name = self.request.model.partition(":")
        usage = response.usage
        cost = self.parts.prices.cost(provider, name, usage)
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
            self.parts.budgets.commit(self._budget, cost)
        chat = response if isinstance(response, ChatResponse) else None
        self._record(
            usage, cost, latency, status="ok", response_id=chat.id if chat is not None else None
        )
        span = self._span
        if span is not None:
            if chat is not None:
                span.set_attribute(GenAI.RESPONSE_ID, chat.id)
                span.set_attribute(GenAI.RESPONSE_MODEL, chat.model or name)
                span.set_attribute(GenAI.RESPONSE_FINISH_REASONS, [chat.finish_reason or ""])
            span.set_attribute(GenAI.USAGE_INPUT, usage.input_tokens)
            span.set_attribute(GenAI.USAGE_OUTPUT, usage.output_tokens)
            span.end()
        return response

    def failed(self, exc: BaseException, usage: Usage | None = None) -> None:
        """Account for a call that raised ``exc``; ``usage`` is what it consumed before
        (a stream cut off after some output), priced and charged like a success."""
        provider, _, name = self.request.model.partition(":")
        kind = failure_kind(exc)
        latency = (time.perf_counter() - self.started) * 1000.0
        cost = self.parts.prices.cost(provider, name, usage) if usage is not None else 0.0
        self.metrics.failed.inc()
        self.parts.metrics.error(provider, name, kind)
        self.metrics.latency.observe(latency / 1000.0)
        if self._budget is not None:
            self.parts.budgets.commit(self._budget, cost)
        self._record(usage or Usage(), cost, latency, status=kind)
        span = self._span
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
            self.parts.usage_sink,
            self.observers,
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
