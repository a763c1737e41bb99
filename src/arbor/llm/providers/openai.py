"""Any OpenAI-compatible endpoint (OpenAI, Ollama, vLLM, llama.cpp server, the mock upstream).

Built on the official ``openai`` SDK: its client holds the credentials, base URL and the
headers it sends (auth, user agent, platform, custom), and its aiohttp transport
(``DefaultAioHttpClient``) carries every request, one connection pool per provider. What is
deliberately not the SDK's:

* retries: ``max_retries=0``; Arbor's pipeline owns the retry policy;
* the request path: Arbor serializes the body itself, sends it through the SDK's HTTP client
  directly and parses the raw reply straight into Arbor types (SSE by hand for streams).
  Against the mock upstream on one core this takes ~0.3-0.45 ms of CPU per call versus
  ~1.2-2.4 ms for ``chat.completions.create``, and ~26 µs of CPU per stream chunk (19 chunks
  per call) versus ~220-270 µs; ``AsyncOpenAI.post`` alone would cost ~200 µs more per call.

Timeouts: ``connect`` and ``read`` are the transport's (time to connect; longest wait for
bytes), ``total`` is an overall deadline per call (for a stream, from the call until its end),
and ``stream_idle`` the longest gap between two network reads of a stream. For a stream the
effective gap limit is ``min(read, stream_idle)``; either firing is reported as
``phase="stream_idle"``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import httpx2
import openai

from arbor.core.config import ProviderSettings, TimeoutSettings
from arbor.core.errors import LLMTimeoutError, ProviderConnectionError, ProviderError
from arbor.llm._ratelimit_headers import LAST_RATE_LIMITS, parse_rate_limit_headers
from arbor.llm.providers._errors import http_error, mask, translate
from arbor.llm.providers._wire import (
    DONE,
    SSEParser,
    chat_body,
    dumps,
    loads,
    parse_completion,
    parse_delta,
    parse_usage,
)
from arbor.llm.tokens import Tokenizer, count_message_tokens, tokenizer_for
from arbor.llm.types import (
    ChatRequest,
    ChatResponse,
    Message,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["NO_KEY", "OpenAICompatibleModel", "ProviderClient", "ProviderClients", "make_client"]

#: Sent as the bearer token when a provider has no key (Ollama, vLLM, llama.cpp accept any).
#: Passing a value also keeps the SDK from reading ``OPENAI_API_KEY`` from the environment:
#: credentials come only from Arbor's settings.
NO_KEY = "unused"


def _sdk_timeout(t: TimeoutSettings) -> httpx2.Timeout:
    # pool=None: waiting for a free pooled connection is bounded by the total deadline.
    return httpx2.Timeout(connect=t.connect, read=t.read, write=t.read, pool=None)


class ProviderClient:
    """One endpoint: the SDK client and the aiohttp-backed HTTP client (one connection pool)
    it was built on, which Arbor's hot path sends through directly."""

    __slots__ = ("_headers", "base_url", "http", "sdk")

    def __init__(self, sdk: openai.AsyncOpenAI, http: httpx2.AsyncClient) -> None:
        self.sdk = sdk
        self.http = http
        self.base_url = str(sdk.base_url)  # always ends with "/"
        self._headers: dict[str, str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        """What the SDK sends on every request (auth, user agent, platform, custom headers),
        taken from its public properties once, inside the event loop."""
        if self._headers is None:
            merged = {**self.sdk.default_headers, **self.sdk.auth_headers}
            self._headers = {k: v for k, v in merged.items() if isinstance(v, str)}
        return self._headers

    def url(self, path: str) -> httpx2.URL:
        return httpx2.URL(self.base_url + path)

    async def aclose(self) -> None:
        await self.sdk.close()  # closes ``http`` too: the SDK owns the client it was given


def make_client(settings: ProviderSettings, timeouts: TimeoutSettings) -> ProviderClient:
    """The client for one endpoint: the SDK's aiohttp transport, no SDK retries."""
    key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    http = openai.DefaultAioHttpClient(timeout=_sdk_timeout(timeouts))
    sdk = openai.AsyncOpenAI(
        api_key=key or NO_KEY,
        base_url=settings.base_url,
        max_retries=0,
        timeout=_sdk_timeout(timeouts),
        default_headers=settings.headers or None,
        http_client=http,
    )
    return ProviderClient(sdk, http)


class ProviderClients:
    """One :class:`ProviderClient` per provider name, shared by all of its models."""

    def __init__(self, timeouts: TimeoutSettings | None = None) -> None:
        self.timeouts = timeouts or TimeoutSettings()
        self._clients: dict[str, ProviderClient] = {}

    def get(self, name: str, settings: ProviderSettings) -> ProviderClient:
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = make_client(settings, self.timeouts)
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


class _StreamState:
    """What a stream has delivered so far, so usage can be estimated if the server never
    reports it (or the stream is cut off)."""

    __slots__ = ("calls", "finished", "id", "model", "parts", "usage", "usage_sent")

    def __init__(self, model: str) -> None:
        self.id = ""
        self.model = model
        self.parts: list[str] = []
        self.calls: dict[int, list[str]] = {}
        self.finished = False
        self.usage: Usage | None = None
        self.usage_sent = False


class OpenAICompatibleModel:
    """One model of an OpenAI-compatible provider, implementing :class:`~arbor.llm.model.Model`.

    ``client`` is normally shared through :class:`ProviderClients`; without one the model
    makes (and on :meth:`aclose` closes) its own.
    """

    def __init__(
        self,
        provider_name: str,
        model_name: str,
        settings: ProviderSettings,
        timeouts: TimeoutSettings,
        client: ProviderClient | None = None,
    ) -> None:
        self.provider = provider_name
        self.name = model_name
        self.timeouts = timeouts
        self._owns_client = client is None
        self._client = client if client is not None else make_client(settings, timeouts)
        self._secret = settings.api_key.get_secret_value() if settings.api_key else None
        self._timeout = _sdk_timeout(timeouts)
        self._chat_url = self._client.url("chat/completions")
        self._tokenizer: Tokenizer = tokenizer_for(provider_name, model_name)

    @property
    def client(self) -> ProviderClient:
        """The endpoint client this model sends through (shared by its provider's models)."""
        return self._client

    # ---- Model protocol -----------------------------------------------------------------
    async def complete(self, request: ChatRequest) -> ChatResponse:
        body = dumps(chat_body(request, self.name, stream=False))
        data = await self._request_json("POST", self._chat_url, body)
        response, has_usage = parse_completion(data, self.name)
        if not has_usage:
            response.usage = self._estimate(request, response.message)
        return response

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """Chunks as they arrive; the last one carries usage (reported, or estimated when the
        server sends none). Closing the iterator early closes the HTTP response."""
        body = dumps(chat_body(request, self.name, stream=True))
        deadline = asyncio.get_running_loop().time() + self.timeouts.total
        response = await self._open(body, deadline)
        state = _StreamState(self.name)
        try:
            if "text/event-stream" not in response.headers.get("content-type", ""):
                async with aclosing(self._non_sse(request, response, deadline)) as replies:
                    async for chunk in replies:
                        yield chunk
                return
            async with aclosing(self._events(response, state, deadline)) as events:
                async for chunk in events:
                    yield chunk
            if not state.finished:
                raise ProviderConnectionError(
                    f"{self.provider}:{self.name}: stream ended before the reply was complete",
                    provider=self.provider,
                    model=self.name,
                )
            if not state.usage_sent:
                yield StreamChunk(
                    id=state.id,
                    model=state.model,
                    usage=state.usage or self._estimate(request, _message_of(state)),
                )
        finally:
            await response.aclose()

    def count_tokens(self, messages: list[Message]) -> int:
        return count_message_tokens(messages, self._tokenizer)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # ---- other endpoints ----------------------------------------------------------------
    async def embed(
        self, inputs: list[str], *, dimensions: int | None = None
    ) -> tuple[list[list[float]], Usage]:
        """Embeddings of ``inputs`` in order, and the usage (estimated if not reported).
        Implements :class:`~arbor.llm.model.EmbeddingModel`."""
        payload: dict[str, Any] = {"model": self.name, "input": inputs, "encoding_format": "float"}
        if dimensions is not None:
            payload["dimensions"] = dimensions
        body = dumps(payload)
        data = await self._request_json("POST", self._client.url("embeddings"), body)
        try:
            rows = sorted(data["data"], key=lambda r: r.get("index", 0))
            vectors = [[float(x) for x in r["embedding"]] for r in rows]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._malformed("embeddings", exc) from exc
        usage = parse_usage(data.get("usage"))
        if usage is None:
            count = self._tokenizer.count
            usage = Usage(input_tokens=sum(count(t) for t in inputs), estimated=True)
        return vectors, usage

    async def list_models(self) -> list[str]:
        """Ids of the models the endpoint serves (``GET /models``)."""
        data = await self._request_json("GET", self._client.url("models"), None)
        try:
            return [str(m["id"]) for m in data["data"]]
        except (KeyError, TypeError) as exc:
            raise self._malformed("models", exc) from exc

    # ---- internals ----------------------------------------------------------------------
    def _deadline(self, when: float | None = None) -> asyncio.Timeout:
        if when is None:
            return asyncio.timeout(self.timeouts.total)
        return asyncio.timeout_at(when)

    async def _send(
        self, method: str, url: httpx2.URL, body: bytes | None, *, stream: bool
    ) -> httpx2.Response:
        """One HTTP exchange on the shared pool; a non-2xx answer raises its Arbor error.
        Sent with ``httpx2`` directly rather than through ``AsyncOpenAI.post``: the SDK's
        generic request path (option copies, URL and header rebuilding) costs ~200 µs of CPU
        per call, a third of a whole call, for nothing Arbor uses."""
        http = self._client.http
        request = http.build_request(
            method, url, content=body, headers=self._client.headers, timeout=self._timeout
        )
        response = await http.send(request, stream=stream)
        # The upstream's x-ratelimit-* headers, for the attempt that sent this (success or not).
        LAST_RATE_LIMITS.set(parse_rate_limit_headers(response.headers))
        if response.status_code >= 400:
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
            raise http_error(
                response.status_code,
                raw.decode("utf-8", errors="replace"),
                response.headers,
                provider=self.provider,
                model=self.name,
                secret=self._secret,
            )
        return response

    async def _request_json(self, method: str, url: httpx2.URL, body: bytes | None) -> Any:
        cm = self._deadline()
        try:
            async with cm:
                response = await self._send(method, url, body, stream=False)
        except Exception as exc:
            raise self._error(exc, cm) from exc
        try:
            return loads(response.content)
        except ValueError as exc:  # orjson's and json's decode errors are ValueErrors
            raise self._malformed(url.path.rpartition("/")[2], exc) from exc

    async def _open(self, body: bytes, deadline: float) -> httpx2.Response:
        cm = self._deadline(deadline)
        try:
            async with cm:
                return await self._send("POST", self._chat_url, body, stream=True)
        except Exception as exc:
            raise self._error(exc, cm) from exc

    async def _events(
        self, response: httpx2.Response, state: _StreamState, deadline: float
    ) -> AsyncGenerator[StreamChunk, None]:
        loop = asyncio.get_running_loop()
        idle = self.timeouts.stream_idle
        reads = response.aiter_raw()
        parser = SSEParser()
        try:
            while True:
                limit = loop.time() + idle
                at = limit if limit < deadline else deadline
                cm = asyncio.timeout_at(at)
                try:
                    async with cm:
                        data = await anext(reads, b"")
                except Exception as exc:
                    raise self._error(exc, cm, idle=at < deadline, in_body=True) from exc
                for payload in parser.feed(data) if data else parser.close():
                    if payload == DONE:
                        state.finished = True
                        return
                    try:
                        event = loads(payload)
                    except ValueError as exc:
                        raise self._malformed("stream event", exc) from exc
                    chunk = self._chunk(event, state)
                    if chunk is not None:
                        yield chunk
                if not data:
                    return
        finally:
            await reads.aclose()

    def _chunk(self, data: Any, state: _StreamState) -> StreamChunk | None:
        """One parsed SSE event → a chunk to yield, or ``None`` for one that carries nothing.
        Usage is only passed on from the final, choice-less chunk (servers that report it on
        every chunk would otherwise look finished after the first)."""
        if not isinstance(data, dict):
            raise self._malformed("stream chunk", TypeError(type(data).__name__))
        if data.get("error"):  # a failure reported inside a 200 stream
            detail = mask(str(data["error"]), self._secret)[:500]
            raise ProviderError(
                f"{self.provider}:{self.name}: stream error: {detail}",
                provider=self.provider,
                model=self.name,
            )
        rid = data.get("id") or state.id
        state.id = rid
        model = data.get("model") or state.model
        state.model = model
        usage = parse_usage(data.get("usage"))
        choices = data.get("choices")
        if not choices:
            if usage is None:
                return None
            state.usage, state.usage_sent = usage, True
            return StreamChunk(id=rid, model=model, usage=usage)
        if usage is not None:
            state.usage = usage
        try:
            chunk = parse_delta(choices[0], rid, model)
        except (TypeError, AttributeError, ValueError) as exc:
            raise self._malformed("stream chunk", exc) from exc
        if chunk.content:
            state.parts.append(chunk.content)
        if chunk.tool_calls:
            for d in chunk.tool_calls:
                call = state.calls.setdefault(d.index, ["", "", ""])
                call[0] = d.id or call[0]
                call[1] = d.name or call[1]
                call[2] += d.arguments or ""
        if chunk.finish_reason is not None:
            state.finished = True
        return chunk

    async def _non_sse(
        self, request: ChatRequest, response: httpx2.Response, deadline: float
    ) -> AsyncGenerator[StreamChunk, None]:
        """A server that ignored ``stream: true`` and answered with one JSON body."""
        cm = self._deadline(deadline)
        try:
            async with cm:
                raw = await response.aread()
        except Exception as exc:
            raise self._error(exc, cm, in_body=True) from exc
        try:
            data = loads(raw)
        except ValueError as exc:
            raise self._malformed("chat completion", exc) from exc
        reply, has_usage = parse_completion(data, self.name)
        calls = [
            ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments)
            for i, c in enumerate(reply.message.tool_calls or ())
        ]
        yield StreamChunk(
            id=reply.id,
            model=reply.model,
            content=reply.message.content,
            tool_calls=calls or None,
            finish_reason=reply.finish_reason,
        )
        usage = reply.usage if has_usage else self._estimate(request, reply.message)
        yield StreamChunk(id=reply.id, model=reply.model, usage=usage)

    def _estimate(self, request: ChatRequest, message: Message) -> Usage:
        """Usage counted with the tokenizer, for servers that do not report it."""
        out = 0
        count = self._tokenizer.count
        if message.content:
            out += count(message.content)
        for call in message.tool_calls or ():
            out += count(call.name) + count(call.arguments)
        return Usage(
            input_tokens=self.count_tokens(request.messages), output_tokens=out, estimated=True
        )

    def _error(
        self,
        exc: Exception,
        cm: asyncio.Timeout,
        *,
        idle: bool = False,
        in_body: bool = False,
    ) -> ProviderError:
        where = f"{self.provider}:{self.name}"
        if isinstance(exc, TimeoutError) and cm.expired():
            phase = "stream_idle" if idle else "total"
            limit = self.timeouts.stream_idle if idle else self.timeouts.total
            return LLMTimeoutError(
                f"{where}: no {'chunk' if idle else 'answer'} within {limit:g}s ({phase} timeout)",
                phase=phase,
                provider=self.provider,
                model=self.name,
            )
        return translate(
            exc,
            provider=self.provider,
            model=self.name,
            secret=self._secret,
            in_stream_body=in_body,
        )

    def _malformed(self, what: str, exc: Exception) -> ProviderError:
        return ProviderError(
            f"{self.provider}:{self.name}: malformed {what} from the server: {exc!r}"[:500],
            provider=self.provider,
            model=self.name,
        )

    def __repr__(self) -> str:
        return f"OpenAICompatibleModel({self.provider}:{self.name})"


def _message_of(state: _StreamState) -> Message:
    calls = [
        ToolCall(id=c[0] or f"call_{i}", name=c[1], arguments=c[2])
        for i, c in sorted(state.calls.items())
    ]
    return Message.assistant("".join(state.parts) or None, tool_calls=calls or None)
