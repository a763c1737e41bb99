"""Structured logging with structlog: JSON or console, request/correlation ids from
contextvars, and redaction of secrets and emails in every record.

Redaction runs as the last processor before rendering, for structlog events and for
records from the standard library (uvicorn, alembic, httpx, openai) alike, so nothing a
dependency logs can leak a key. Exact secret values known from the settings are redacted
as well as anything that merely looks like one.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, clear_contextvars
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "Redactor",
    "bind_contextvars",
    "bound_contextvars",
    "clear_contextvars",
    "configure_logging",
    "get_logger",
]

MASK = "***"

# A credential after an auth scheme: 6+ token characters with a digit, a capital after the
# first letter, or 16+ of them — so prose ("Bearer authentication", "Bearer <API key>") is
# left alone while real tokens (JWTs, base64 user:password, random keys) are masked.
_T = r"[A-Za-z0-9._~+/=\-]"
_TOKEN = rf"(?-i:(?={_T}*[0-9])|(?={_T}+[A-Z])|(?={_T}{{16}})){_T}{{6,}}"
_SCHEME = r"(?:bearer|basic|token)\s+"

# Patterns for things that look like credentials, applied to every string in a record.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # OpenAI-style and similar keys: sk-..., sk-proj-..., arb_... (Arbor's own keys)
    (re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-]{6,}"), MASK),
    (re.compile(r"\barb_[A-Za-z0-9_\-]{8,}"), MASK),
    # Authorization headers in any form
    (re.compile(r"(?i)\b(bearer|basic)\s+" + _TOKEN), r"\1 " + MASK),
    # key=value / "key": "value" pairs whose key names a secret; an auth scheme before the
    # value is kept, and a placeholder (<API key>, ***) or a bare scheme word is no value
    (
        re.compile(
            r"(?i)([\"']?\b(?:api[_-]?key|x-api-key|authorization|password|passwd|secret|"
            r"access[_-]?token|refresh[_-]?token|token)[\"']?\s*[:=]\s*[\"']?"
            r"(?:" + _SCHEME + r")?)"
            r"(?!\*\*\*)(?!<)(?!" + _SCHEME + r"|(?:bearer|basic|token)\b)([^\s\"',;&}]+)"
        ),
        r"\1" + MASK,
    ),
    # passwords in URLs: scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]+:)[^@\s/]+@"), r"\1" + MASK + "@"),
    # emails
    (re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"), "[email]"),
)

# Field names whose values are secrets whatever they look like (not "input_tokens").
_SECRET_FIELD = re.compile(
    r"(?i)(?:^|[_-])(?:api[_-]?key|authorization|password|passwd|secret|token|cookie|"
    r"credentials?|session)$"
)


class Redactor:
    """A structlog processor (and helper) that scrubs secrets from any nested value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Register exact values (e.g. configured API keys) to mask wherever they appear."""
        for s in secrets:
            if s and len(s) >= 4 and s not in self._secrets:
                self._secrets.append(s)
        self._secrets.sort(key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        for pattern, repl in _PATTERNS:
            value = pattern.sub(repl, value)
        return value

    def value(self, value: Any, field: str = "") -> Any:
        if field and _SECRET_FIELD.search(field) and value not in (None, "", True, False):
            return MASK
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set):
            return [self.value(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.text(repr(value))

    def __call__(self, _logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
        for k in list(event):
            event[k] = self.value(event[k], "" if k == "event" else k)
        return event


def _format_exc_first(_l: WrappedLogger, _n: str, event: EventDict) -> EventDict:
    """Render exc_info to text before redaction so tracebacks get scrubbed too."""
    return structlog.processors.format_exc_info(_l, _n, event)


def configure_logging(
    level: str = "info",
    fmt: str = "console",
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> Redactor:
    """Configure structlog and the standard library root logger once per process.

    Returns the :class:`Redactor` in use so callers can register more secrets later
    (e.g. an API key created at run time).
    """
    redactor = Redactor(secrets)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        _format_exc_first,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=_plain_exc)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redactor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_arbor", False):
            root.removeHandler(old)
    handler._arbor = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Chatty dependencies stay at warning unless we are debugging.
    for name in (
        "httpx",
        "httpx2",
        "httpcore",
        "openai",
        "aiosqlite",
        "asyncio",
        "alembic",
        "faiss",
        "milvus_lite",
        "pymilvus",
    ):
        logging.getLogger(name).setLevel("DEBUG" if level == "debug" else "WARNING")
    return redactor


def _plain_exc(sio: TextIO, exc_info: Any) -> None:
    structlog.dev.plain_traceback(sio, exc_info)


def get_logger(name: str = "arbor", **initial: Any) -> Any:
    """A structlog logger bound to ``name`` with optional initial context."""
    logger = structlog.get_logger(name)
    return logger.bind(**initial) if initial else logger
