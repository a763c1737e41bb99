"""One embeddings call through the pipeline: budget reservation → rate limiter → circuit
breaker → retry → provider → usage/cost/metrics → budget commit.

What chat calls have and embeddings do not: no cache (vectors are cheap and callers keep
them), no fallbacks (another model's vectors live in a different space, so silently mixing
them would corrupt a caller's index), no truncation (a text is embedded whole or refused).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from arbor.core.errors import ArborError, ProviderError
from arbor.llm._accounting import budget_scopes, record_usage
from arbor.llm._attempts import AttemptRunner
from arbor.llm.budgets import BudgetReservation
from arbor.llm.model import EmbeddingModel, EmbeddingsNotSupportedError
from arbor.llm.types import EmbeddingRequest, EmbeddingResponse, Message, Usage

if TYPE_CHECKING:
    from arbor.llm.client import LLMClient

__all__ = ["embed_call"]

Vectors = tuple[list[list[float]], Usage]


def _kind(exc: BaseException) -> str:
    if isinstance(exc, ArborError):
        return exc.kind
    if isinstance(exc, GeneratorExit | asyncio.CancelledError):
        return "cancelled"
    return type(exc).__name__


async def embed_call(
    client: LLMClient, runner: AttemptRunner, request: EmbeddingRequest
) -> EmbeddingResponse:
    """Embed ``request.input`` with ``runner``'s model, accounted like a chat call."""
    model = runner.model
    if not isinstance(model, EmbeddingModel):
        raise EmbeddingsNotSupportedError(
            f"model {request.model} does not support embeddings", model=request.model
        )
    provider, _, name = request.model.partition(":")
    started = time.perf_counter()
    estimate: list[int] = []

    def input_tokens() -> int:  # only computed when a limit or budget needs it
        if not estimate:
            estimate.append(runner.model.count_tokens([Message.user(t) for t in request.input]))
        return estimate[0]

    budget: BudgetReservation | None = None
    scopes = budget_scopes(request.context)
    if client.budgets.has_limits(scopes):
        cost_bound = client.prices.estimate(provider, name, input_tokens(), 0)
        budget = client.budgets.reserve(scopes, cost_bound)
    dims = request.dimensions

    async def call(req: EmbeddingRequest) -> Vectors:
        return await model.embed(req.input, dimensions=dims)

    try:
        (vectors, usage), _ = await runner.run(
            request,
            call,
            lambda result: result[1].total_tokens,
            input_tokens,
            client.key_limits(request.model, request.context.key_id),
        )
    except BaseException as exc:
        kind = _kind(exc)
        latency = (time.perf_counter() - started) * 1000.0
        client.metrics.model(provider, name).failed.inc()
        client.metrics.error(provider, name, kind)
        if budget is not None:
            client.budgets.commit(budget, 0.0)
        _record(client, request, Usage(), 0.0, latency, kind)
        raise
    if len(vectors) != len(request.input):  # a broken upstream: say so, never misalign
        raise ProviderError(
            f"{request.model}: sent {len(request.input)} text(s) to embed but got "
            f"{len(vectors)} vector(s) back",
            provider=provider,
            model=name,
        )
    cost = client.prices.cost(provider, name, usage)
    latency = (time.perf_counter() - started) * 1000.0
    m = client.metrics.model(provider, name)
    m.ok.inc()
    m.tokens_in.inc(usage.input_tokens)
    if cost:
        m.cost.inc(cost)
    m.latency.observe(latency / 1000.0)
    if budget is not None:
        client.budgets.commit(budget, cost)
    _record(client, request, usage, cost, latency, "ok")
    return EmbeddingResponse(
        model=request.model, vectors=vectors, usage=usage, cost_usd=cost, latency_ms=latency
    )


def _record(
    client: LLMClient,
    request: EmbeddingRequest,
    usage: Usage,
    cost: float,
    latency_ms: float,
    status: str,
) -> None:
    """Embeddings produce no output tokens and are never cached: only the input counts."""
    record_usage(
        client.usage_sink,
        request.model,
        request.context,
        Usage(input_tokens=usage.input_tokens, estimated=usage.estimated),
        cost=cost,
        latency_ms=latency_ms,
        status=status,
    )
