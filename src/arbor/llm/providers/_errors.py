"""SDK and transport exceptions → Arbor's error tree, at the adapter.

The aiohttp transport maps aiohttp errors to httpx ones imprecisely (a server disconnect
and a socket read timeout both surface as ``ConnectTimeout``), so the phase and the kind
are taken from the deepest recognisable exception in the cause chain, not the outermost.
Error messages and bodies never contain the API key: it is masked before anything is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp
import httpx2
import openai

from arbor.core.errors import (
    ContextTooLongError,
    LLMTimeoutError,
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    RateLimitedError,
)
from arbor.llm.retry import parse_retry_after

__all__ = ["BODY_LIMIT", "http_error", "mask", "translate"]

#: Characters of an error body kept on the exception (enough for any provider's JSON error).
BODY_LIMIT = 2000
_MESSAGE_LIMIT = 500
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_CONTEXT_RE = re.compile(
    r"maximum context length|context[ _]length[ _]exceeded|exceeds? (?:the )?(?:model'?s? )?"
    r"(?:available )?context (?:size|length|window)|prompt is too long|input is too long",
    re.IGNORECASE,
)


def mask(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    return text.replace(secret, "***") if secret and secret in text else text


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _classify(exc: BaseException) -> str | None:
    """``connect``/``read`` for a timeout, ``connection`` for a failed connection."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect"
    if isinstance(exc, aiohttp.ServerTimeoutError):  # incl. SocketTimeoutError (sock_read)
        return "read"
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return "connection"
    if isinstance(exc, httpx2.ConnectTimeout | httpx2.PoolTimeout):
        return "connect"
    if isinstance(exc, httpx2.TimeoutException):
        return "read"
    if isinstance(exc, httpx2.TransportError | ConnectionError):
        return "connection"
    return None


def _kind(exc: BaseException) -> str | None:
    kinds = [k for k in map(_classify, _chain(exc)) if k is not None]
    return kinds[-1] if kinds else None  # the deepest cause knows best


def translate(
    exc: Exception,
    *,
    provider: str,
    model: str,
    secret: str | None,
    in_stream_body: bool = False,
) -> ProviderError:
    """The Arbor error for an exception raised while calling ``provider:model``.

    ``in_stream_body`` says the exception came while reading a stream after its headers, so
    a read timeout there is the gap between chunks (``stream_idle``)."""
    where = f"{provider}:{model}"
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        return http_error(
            exc.response.status_code,
            _body_text(exc.response),
            exc.response.headers,
            provider=provider,
            model=model,
            secret=secret,
        )
    kind = _kind(exc)
    if kind in ("connect", "read"):
        phase = "stream_idle" if kind == "read" and in_stream_body else kind
        return LLMTimeoutError(
            f"{where}: {phase} timeout", phase=phase, provider=provider, model=model
        )
    if kind == "connection" or isinstance(exc, openai.APIConnectionError):
        detail = mask(str(exc.__cause__ or exc), secret)[:_MESSAGE_LIMIT]
        return ProviderConnectionError(
            f"{where}: connection failed: {detail or type(exc).__name__}",
            provider=provider,
            model=model,
        )
    detail = mask(str(exc), secret)[:_MESSAGE_LIMIT]
    return ProviderError(f"{where}: {type(exc).__name__}: {detail}", provider=provider, model=model)


def _body_text(response: httpx2.Response) -> str:
    try:
        return response.text
    except httpx2.ResponseNotRead:
        return ""


def http_error(
    status: int,
    body: str,
    headers: Mapping[str, str],
    *,
    provider: str,
    model: str,
    secret: str | None,
) -> ProviderHTTPError:
    """The error for a non-2xx answer: its kind from the status and the error code/message,
    ``retry_after`` from ``retry-after-ms``/``Retry-After``, the body masked and truncated."""
    body = mask(body, secret)
    message, code = _error_fields(body)
    message = (message or body or "(no body)")[:_MESSAGE_LIMIT]
    text = f"{provider}:{model}: HTTP {status}: {message}"
    kwargs: dict[str, Any] = {
        "status_code": status,
        "body": body[:BODY_LIMIT],
        "provider": provider,
        "model": model,
        "retry_after": parse_retry_after(headers),
    }
    if status == 429:
        err: ProviderHTTPError = RateLimitedError(text, **kwargs)
        if code == "insufficient_quota":  # billing, not pacing: waiting will not help
            err.retriable = False
        return err
    if status in (400, 413, 422) and (code in _CONTEXT_CODES or _CONTEXT_RE.search(message)):
        return ContextTooLongError(text, **kwargs)
    return ProviderHTTPError(text, **kwargs)


def _error_fields(body: str) -> tuple[str | None, str | None]:
    """``(message, code)`` of an OpenAI-style ``{"error": {...}}`` body, if it is one."""
    from arbor.llm.providers._wire import loads

    try:
        data = loads(body) if body.startswith("{") else None
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    err = data.get("error", data)
    if isinstance(err, str):
        return err, None
    if not isinstance(err, dict):
        return None, None
    message, code = err.get("message"), err.get("code") or err.get("type")
    return (
        message if isinstance(message, str) else None,
        code if isinstance(code, str) else None,
    )
