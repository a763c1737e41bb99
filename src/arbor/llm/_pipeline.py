"""The steps of one call on a client's shared parts, for whichever front it came through.

Order, for plain and streamed calls alike::

    cache → budget reservation → rate limiter → circuit breaker → retry → provider
          → usage/cost → budget commit → cache fill → metrics/trace

Fallback chains (``settings.llm.fallbacks``) move to the next model when a circuit is open
or a model's retries are exhausted; open circuits are skipped without a call. Embeddings take
the same steps without the cache and the fallbacks (see :func:`embed`).

Every function takes the :class:`~arbor.llm._parts.ClientParts` and the observers of the
front (client or view) the call came through; :class:`~arbor.llm._calls.CallAccount` does the
book-keeping of each call.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing

import structlog

from arbor.core.errors import CircuitOpenError, ProviderError, ProviderHTTPError
from arbor.llm._calls import CallAccount, StreamAccumulator
from arbor.llm._parts import ClientParts
from arbor.llm.cache import cache_key, replay_stream, should_cache
from arbor.llm.model import EmbeddingModel, EmbeddingsNotSupportedError
from arbor.llm.ratelimit import Reservation
from arbor.llm.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamChunk,
    Usage,
)
from arbor.llm.usage import UsageObserver

__all__ = ["complete", "embed", "stream"]

log = structlog.get_logger("arbor.llm")

Observers = Sequence[UsageObserver]
Vectors = tuple[list[list[float]], Usage]

# HTTP statuses that say the request itself is wrong: another model would refuse it too.
_NO_FALLBACK_STATUSES = frozenset({400, 413, 422})


async def complete(parts: ClientParts, req: ChatRequest, observers: Observers) -> ChatResponse:
    """One reply: through cache, budget, limits, breaker, retries and fallbacks."""
    chain = parts.chain(req.model)
    for i, model_id in enumerate(chain):
        last = i == len(chain) - 1
        if not last and parts.breakers.is_open(model_id):
            log.info("llm.fallback.skip_open", model=model_id)
            continue
        attempt = req if model_id == req.model else req.model_copy(update={"model": model_id})
        try:
            return await _complete_one(parts, attempt, observers)
        except ProviderError as exc:
            if last or not _falls_back(exc):
                raise
            log.warning("llm.fallback", model=model_id, error=exc.kind, next=chain[i + 1])
    raise AssertionError("unreachable: the last model either returns or raises")


async def stream(
    parts: ClientParts, req: ChatRequest, observers: Observers
) -> AsyncGenerator[StreamChunk, None]:
    """Chunks as they arrive; the last one carries usage and cost. Fallback is possible
    only until the first chunk has been yielded."""
    chain = parts.chain(req.model)
    for i, model_id in enumerate(chain):
        last = i == len(chain) - 1
        if not last and parts.breakers.is_open(model_id):
            continue
        attempt = req if model_id == req.model else req.model_copy(update={"model": model_id})
        started = False
        try:
            # Closed here, not when collected: a consumer that stops early has the call
            # accounted (and its model stream closed) before it goes on.
            async with aclosing(_stream_one(parts, attempt, observers)) as chunks:
                async for chunk in chunks:
                    started = True
                    yield chunk
            return
        except ProviderError as exc:
            if started or last or not _falls_back(exc):
                raise
            log.warning("llm.fallback", model=model_id, error=exc.kind, next=chain[i + 1])


async def embed(
    parts: ClientParts, request: EmbeddingRequest, observers: Observers
) -> EmbeddingResponse:
    """Vectors for ``request.input``, accounted like a chat call with no output.

    What chat calls have and embeddings do not: no cache (vectors are cheap and callers keep
    them), no fallbacks (another model's vectors live in a different space, so silently
    mixing them would corrupt a caller's index), no truncation (a text is embedded whole or
    refused). A model without embeddings raises :class:`EmbeddingsNotSupportedError`.
    """
    runner = parts.runner(request.model)
    model = runner.model
    if not isinstance(model, EmbeddingModel):
        raise EmbeddingsNotSupportedError(
            f"model {request.model} does not support embeddings", model=request.model
        )
    account = CallAccount.start(parts, request, model, observers)
    account.open_span()
    dims = request.dimensions

    async def call(req: EmbeddingRequest) -> Vectors:
        return await model.embed(req.input, dimensions=dims)

    try:
        account.reserve_budget()
        (vectors, reported), _ = await runner.run(
            request, call, _embedded_tokens, account.reserve_tokens, account.extra_limits
        )
    except BaseException as exc:
        account.failed(exc)
        raise
    # Embeddings produce no output tokens: only the input counts, in the reply and the row.
    usage = Usage(input_tokens=reported.input_tokens, estimated=reported.estimated)
    if len(vectors) != len(request.input):  # a broken upstream: say so, never misalign
        provider, _, name = request.model.partition(":")
        error = ProviderError(
            f"{request.model}: sent {len(request.input)} text(s) to embed but got "
            f"{len(vectors)} vector(s) back",
            provider=provider,
            model=name,
        )
        account.failed(error, usage)  # the upstream charged for the texts all the same
        raise error
    return account.succeeded(EmbeddingResponse(model=request.model, vectors=vectors, usage=usage))


# ---- one model ----------------------------------------------------------------------------
async def _complete_one(parts: ClientParts, req: ChatRequest, observers: Observers) -> ChatResponse:
    runner = parts.runner(req.model)
    account = CallAccount.start(parts, req, runner.model, observers)
    key, hit = await _lookup(parts, req)
    if hit is not None:
        return account.cache_hit(hit)
    account.open_span()
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
        account.failed(exc)
        raise
    response = account.succeeded(response)
    if key is not None and parts.cache is not None and used is req:
        await parts.cache.aput(key, response)
    return response


async def _stream_one(
    parts: ClientParts, req: ChatRequest, observers: Observers
) -> AsyncGenerator[StreamChunk, None]:
    runner = parts.runner(req.model)
    account = CallAccount.start(parts, req, runner.model, observers)
    key, hit = await _lookup(parts, req)
    if hit is not None:
        async for replayed in replay_stream(account.cache_hit(hit)):
            yield replayed
        return
    account.open_span()
    acc = StreamAccumulator(req)
    leases: list[Reservation] = []
    chunks: AsyncIterator[StreamChunk] | None = None
    try:
        account.reserve_budget()
        first, chunks, leases, used = await runner.open_stream(
            req, account.reserve_tokens, account.extra_limits
        )
        account.first_token()
        chunk: StreamChunk | None = first
        while chunk is not None:
            acc.add(chunk)
            if chunk.usage is not None:  # the final chunk: price it before it leaves
                response = account.succeeded(acc.response(runner.model))
                chunk.cost_usd = response.cost_usd
            yield chunk
            chunk = await _next_or_none(chunks)
        if acc.usage is None:  # the provider reported no usage: estimate and say so
            response = account.succeeded(acc.response(runner.model))
            yield StreamChunk(
                id=acc.id, model=acc.model, usage=response.usage, cost_usd=response.cost_usd
            )
    except BaseException as exc:
        partial = acc.partial_response(runner.model)
        if not acc.usage:
            account.failed(exc, partial.usage if partial is not None else None)
        await runner.settle(leases, partial.usage.total_tokens if partial else 0)
        raise
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:  # the consumer may have stopped early
            await close()
    await runner.settle(leases, response.usage.total_tokens)
    if key is not None and parts.cache is not None and used is req:
        await parts.cache.aput(key, response)


# ---- helpers ------------------------------------------------------------------------------
async def _lookup(parts: ClientParts, req: ChatRequest) -> tuple[str | None, ChatResponse | None]:
    """The cache key (None when this request is not cacheable) and a hit, if any."""
    cache = parts.cache
    if cache is None or not should_cache(req, parts.settings.llm.cache):
        return None, None
    key = cache_key(req)
    hit = await cache.aget(key)
    if hit is None:
        parts.metrics.cache_miss()
    return key, hit


async def _next_or_none(chunks: AsyncIterator[StreamChunk]) -> StreamChunk | None:
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return None


def _response_tokens(response: ChatResponse) -> int:
    return response.usage.total_tokens


def _embedded_tokens(result: Vectors) -> int:
    return result[1].total_tokens


def _falls_back(exc: ProviderError) -> bool:
    if isinstance(exc, CircuitOpenError):
        return True
    if isinstance(exc, ProviderHTTPError) and exc.status_code in _NO_FALLBACK_STATUSES:
        return False
    return True
