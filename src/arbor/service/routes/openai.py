"""The OpenAI-compatible endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` and
``POST /v1/embeddings``, so any OpenAI client (the official SDK, Open WebUI, curl) can use
provider models, stored agents (``agent:<name>``) and workflows (``workflow:<name>``).

Provider models go through the service's :class:`~arbor.llm.client.LLMClient` with the
caller's ``key_id`` in the call context (per-key rpm/tpm/budget apply); the upstream request is
built from typed fields only, so nothing in a body can redirect it (see
:mod:`arbor.service.openai_compat`). Streams are plain ``StreamingResponse``\\ s of pre-encoded
SSE frames rather than sse-starlette's ``EventSourceResponse``: its per-event encoding and
ping task cost more per chunk than the whole encoder here, and a chat stream needs neither
(it ends when the reply does). The first chunk is awaited before the response starts, so a
refusal or an upstream failure still gets its HTTP status; later failures become an
``{"error": ...}`` event, which the openai SDK raises.

Errors use OpenAI's shape (the renderer in :mod:`arbor.service.problems`) with the statuses
OpenAI clients expect: 400 for an invalid request (OpenAI's, where the rest of the API says
422), 401/403 for keys, 404 for an unknown model, 429 with ``Retry-After``, 502/503/504 for
upstream trouble. ``x-should-retry: false`` is sent where a client retry cannot help (409, and
5xx after Arbor's own retries), which the openai SDK obeys.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from contextlib import aclosing
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response, StreamingResponse

from arbor.agents import AgentError
from arbor.agents.workflow.registry import WorkflowRegistry
from arbor.core.errors import ArborError, ConfigError, ProviderHTTPError, UnknownModelError
from arbor.core.ids import new_id
from arbor.core.logging import Redactor
from arbor.llm.providers.local import BUNDLED_MODELS
from arbor.llm.types import StreamChunk
from arbor.service.context import ServiceContext
from arbor.service.deps import Ctx, KeyFirstRoute, ReadKey, RunKey
from arbor.service.openai_compat import (
    ChatCompletionRequest,
    EmbeddingsIn,
    to_chat_request,
    to_embedding_request,
    to_messages,
)
from arbor.service.openai_targets import AgentTarget, WorkflowTarget
from arbor.service.openai_wire import (
    ChunkEncoder,
    completion_body,
    embeddings_body,
    encode_stream,
    model_entry,
    models_body,
    with_keepalive,
)
from arbor.service.problems import Problem, problem_for, render_problem
from arbor.store.agents import AgentRepository

__all__ = ["KEEPALIVE_SECONDS", "OpenAIRoute", "router"]

_JSON = "application/json"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_LOCAL_MODEL = "local:smollm2"
#: Seconds of silence after which an agent or workflow stream sends a keep-alive comment.
KEEPALIVE_SECONDS = 15.0


class OpenAIRoute(KeyFirstRoute):
    """Answers errors raised anywhere in the route (dependencies, body validation, the
    handler) in OpenAI's shape with OpenAI's statuses; the key is checked first."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return _error_response(request, _validation_problem(exc.errors()))
            except ArborError as exc:
                return _error_response(request, _problem(exc))

        return route


def _validation_problem(errors: Any) -> Problem:
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    where = ".".join(loc)
    msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    detail = f"{where}: {msg}" if where else msg
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return Problem(400, detail, "invalid_request", param=loc[-1] if loc else None)


def _problem(exc: ArborError) -> Problem:
    problem = problem_for(exc)
    status, headers = problem.status, dict(problem.headers)
    if isinstance(exc, AgentError) and status == 500:
        # An agent model that could not produce an answer (invalid output after re-asks,
        # an endless tool loop): a bad upstream answer, not a server bug.
        status = 502
        problem = Problem(502, exc.message, exc.kind)
    elif isinstance(exc, ProviderHTTPError) and exc.status_code in (400, 404, 422):
        # The upstream refused the request itself (a bad tool schema, an unknown model):
        # the caller's to fix, so say it as the upstream did (its message is masked).
        status = 404 if exc.status_code == 404 else 400
    elif status == 422:
        status = 400
    if status == 409 or status >= 500:
        headers["x-should-retry"] = "false"
    detail = problem.detail
    if status != problem.status and status < 500:
        detail = exc.message
    return Problem(status, detail, problem.kind, headers, param=problem.param)


def _redactor(request: Request) -> Redactor | None:
    found = getattr(request.app.state, "redactor", None)
    if found is None:
        ctx = getattr(request.app.state, "ctx", None)
        found = getattr(ctx, "redactor", None)
    return found if isinstance(found, Redactor) else None


def _error_response(request: Request, problem: Problem) -> Response:
    redactor = _redactor(request)
    rid = request.scope.get("state", {}).get("request_id")
    status, headers, body = render_problem(
        problem,
        request_id=rid if isinstance(rid, str) else None,
        path=request.url.path,
        redactor=redactor,
    )
    response = Response(body, status_code=status)
    response.raw_headers = headers
    return response


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)


# ---- models ---------------------------------------------------------------------------
def _provider_models(ctx: ServiceContext) -> list[str]:
    """Model ids the deployment is configured with: the default, fallback chains, and the
    ids that limits and prices are set for (wildcards and bare names left out)."""
    llm = ctx.settings.llm
    ids = {ctx.settings.default_model, _LOCAL_MODEL}
    for model, chain in llm.fallbacks.items():
        ids.add(model)
        ids.update(chain)
    ids.update(llm.limits)
    ids.update(llm.prices)
    return sorted(i for i in ids if ":" in i and "*" not in i and not i.startswith(":"))


async def _all_models(ctx: ServiceContext) -> list[dict[str, Any]]:
    entries = [model_entry(m, m.partition(":")[0]) for m in _provider_models(ctx)]
    for agent in await AgentRepository(ctx.db).list(status="enabled"):
        created = int(agent.created_at.timestamp())
        entries.append(model_entry(f"agent:{agent.name}", "arbor", created))
    names = ctx.runs.workflow_names() if ctx.runs is not None else WorkflowRegistry().names()
    entries += [model_entry(f"workflow:{name}", "arbor") for name in names]
    return entries


@router.get("/models", summary="List models: provider models, agents and workflows")
async def list_models(ctx: Ctx, principal: ReadKey) -> Response:
    return Response(models_body(await _all_models(ctx)), media_type=_JSON)


@router.get("/models/{model_id:path}", summary="Retrieve one model")
async def retrieve_model(model_id: str, ctx: Ctx, principal: ReadKey) -> Response:
    for entry in await _all_models(ctx):
        if entry["id"] == model_id:
            return Response(orjson.dumps(entry), media_type=_JSON)
    raise UnknownModelError(f"model {model_id!r} not found (see GET /v1/models)")


# ---- chat completions -----------------------------------------------------------------
def _check_provider_model(ctx: ServiceContext, model_id: str) -> None:
    """404 for ids no provider serves, before anything is sent."""
    provider, sep, name = model_id.partition(":")
    if not sep or not provider or not name:
        raise UnknownModelError(
            f"model {model_id!r} not found: use provider:model, agent:<name> or "
            "workflow:<name> ids (see GET /v1/models)"
        )
    if provider == "local" and name not in BUNDLED_MODELS and model_id not in _provider_models(ctx):
        # ``local:/path/to/model.gguf`` loads a file from the server's disk: only ids the
        # deployment configured may, or a caller could probe paths and fill memory.
        raise UnknownModelError(
            f"model {model_id!r} not found: local model files must be configured on the "
            "server (see GET /v1/models)",
            provider=provider,
            model=name,
        )
    try:
        ctx.client.model(model_id)
    except ConfigError as exc:  # a provider without its key: not a model this server has
        raise UnknownModelError(
            f"model {model_id!r} is not available here: {exc.variable or 'its provider'} "
            "is not configured",
            provider=provider,
            model=name,
        ) from None


async def _sse(
    request: Request,
    chunks: AsyncIterator[StreamChunk],
    *,
    rid: str | None,
    model: str,
    include_usage: bool,
    headers: dict[str, str],
    keepalive: float | None = None,
) -> Response:
    """Await the first chunk (errors still get their status), then stream the rest (with
    keep-alive comments every ``keepalive`` seconds of silence, when given)."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = StreamChunk(finish_reason="stop")
    except BaseException:
        await _aclose(chunks)
        raise
    encoder = ChunkEncoder(
        rid or _chatcmpl_id(first.id), model, int(time.time()), include_usage=include_usage
    )
    redactor = _redactor(request)
    redact = redactor.text if redactor is not None else None

    async def body() -> AsyncIterator[bytes]:
        async with aclosing(_owned(chunks)) as source:
            frames = encode_stream(
                source, encoder, include_usage=include_usage, first=first, redact=redact
            )
            if keepalive is not None:
                frames = with_keepalive(frames, keepalive)
            async with aclosing(frames):
                async for frame in frames:
                    yield frame

    return StreamingResponse(body(), media_type="text/event-stream", headers=_SSE_HEADERS | headers)


async def _owned(chunks: AsyncIterator[StreamChunk]) -> AsyncGenerator[StreamChunk, None]:
    """``chunks`` as a generator that closes it when closed (client gone, error, end)."""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        await _aclose(chunks)


async def _aclose(chunks: AsyncIterator[StreamChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


def _chatcmpl_id(upstream_id: str) -> str:
    return upstream_id or f"chatcmpl-{new_id()}"


@router.post(
    "/chat/completions",
    summary="Chat completion (OpenAI-compatible; SSE when stream is true)",
    responses={200: {"content": {_JSON: {}, "text/event-stream": {}}}},
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, ctx: Ctx, principal: RunKey
) -> Response:
    kind, _, name = body.model.partition(":")
    if kind in ("agent", "workflow") and name:
        messages = to_messages(body.messages)
        target: AgentTarget | WorkflowTarget
        if kind == "agent":
            target = AgentTarget(ctx, name, messages, principal.key_id)
        else:
            target = WorkflowTarget(ctx, name, messages, principal.key_id)
        await target.prepare()
        headers = {"x-arbor-run-id": target.run_id}
        if body.stream:
            return await _sse(
                request,
                target.stream(),
                rid=target.run_id,
                model=body.model,
                include_usage=body.include_usage,
                headers=headers,
                keepalive=KEEPALIVE_SECONDS,
            )
        reply = await target.complete()
        content = completion_body(reply, rid=target.run_id, model=body.model, created=_now())
        return Response(content, media_type=_JSON, headers=headers)
    req = to_chat_request(body, principal.key_id)
    _check_provider_model(ctx, req.model)
    if body.stream:
        return await _sse(
            request,
            ctx.client.stream(req),
            rid=None,
            model=body.model,
            include_usage=body.include_usage,
            headers={},
        )
    response = await ctx.client.complete(req)
    content = completion_body(
        response, rid=_chatcmpl_id(response.id), model=body.model, created=_now()
    )
    return Response(content, media_type=_JSON)


def _now() -> int:
    return int(time.time())


# ---- embeddings -----------------------------------------------------------------------
@router.post("/embeddings", summary="Embeddings (OpenAI-compatible)")
async def embeddings(body: EmbeddingsIn, ctx: Ctx, principal: RunKey) -> Response:
    req = to_embedding_request(body, principal.key_id)
    _check_provider_model(ctx, req.model)
    reply = await ctx.client.embed(req)
    content = embeddings_body(
        reply.vectors, model=body.model, usage=reply.usage, encoding=body.encoding_format
    )
    return Response(content, media_type=_JSON)
