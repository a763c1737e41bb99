"""The upstream's own account of its rate limits: OpenAI-style ``x-ratelimit-*`` headers.

OpenAI-compatible servers send, on successes and 429s alike::

    x-ratelimit-limit-requests: 600        x-ratelimit-limit-tokens: 150000
    x-ratelimit-remaining-requests: 3      x-ratelimit-remaining-tokens: 149000
    x-ratelimit-reset-requests: 1s         x-ratelimit-reset-tokens: 6m0s

(resets as Go durations: ``20ms``, ``1s``, ``6m0s``, ``1h2m3.5s``; a bare number is seconds).
The provider adapter parses them into a :class:`RateLimitInfo` and leaves it in
:data:`LAST_RATE_LIMITS` for the attempt that made the request; :func:`plan` turns it into an
:class:`Adaptation` the limiters apply (:meth:`~arbor.llm.ratelimit.RateLimiter.adapt`):

- **quota**: until the upstream's reset, the model's key admits no more than what remains
  after this process's requests already in flight (none when that is used up: the key is
  held until the reset), so the requests that would be refused are never sent;
- **cap**: when the upstream's limit is lower than the configured rpm/tpm, the effective
  rate is lowered to it (and raised back when the upstream reports more again).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from arbor.core.config import ModelLimits

__all__ = [
    "LAST_RATE_LIMITS",
    "Adaptation",
    "RateLimitInfo",
    "parse_rate_limit_headers",
    "parse_reset",
    "plan",
]

#: Set by the provider adapter after each HTTP exchange (in the calling task's context).
LAST_RATE_LIMITS: ContextVar[RateLimitInfo | None] = ContextVar("arbor_rate_limits", default=None)

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
#: Longest reset believed (a garbage header must not hold a key for days).
MAX_RESET = 3600.0


def parse_reset(value: str | None) -> float | None:
    """Seconds in a reset header (``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``, ``"0.5"``),
    or None when it is missing or malformed. Capped at :data:`MAX_RESET`."""
    if value is None:
        return None
    text = value.strip().lower()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                return None
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text):
            return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RESET)


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What the upstream said about its limits (None: it did not say, or said garbage)."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None


def parse_rate_limit_headers(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """The ``x-ratelimit-*`` headers of a response (any letter case), or None if it has none."""
    raw = getattr(headers, "raw", None)  # httpx's Headers: scan the bytes (about 1 µs)
    if isinstance(raw, list):
        found = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in raw
            if k[:12].lower() == b"x-ratelimit-"
        }
    else:
        found = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}
    if not found:
        return None
    info = RateLimitInfo(
        limit_requests=_count(found.get("x-ratelimit-limit-requests")),
        remaining_requests=_count(found.get("x-ratelimit-remaining-requests")),
        reset_requests=parse_reset(found.get("x-ratelimit-reset-requests")),
        limit_tokens=_count(found.get("x-ratelimit-limit-tokens")),
        remaining_tokens=_count(found.get("x-ratelimit-remaining-tokens")),
        reset_tokens=parse_reset(found.get("x-ratelimit-reset-tokens")),
    )
    return None if info == RateLimitInfo() else info


@dataclass(frozen=True, slots=True)
class Adaptation:
    """What a limiter should do for one key after a response.

    ``requests_left`` more requests (``tokens_left`` more tokens) may be admitted during the
    next ``requests_reset`` (``tokens_reset``) seconds; None: no such quota. The limiter
    takes the requests it admitted that are still unanswered, other than the one whose
    answer this is, off ``requests_left`` (it knows them, across processes on Redis). ``cap_rpm`` /
    ``cap_tpm``: the upstream's limits where lower than the configured ones (None: no cap,
    remove any)."""

    requests_left: int | None = None
    requests_reset: float | None = None
    tokens_left: int | None = None
    tokens_reset: float | None = None
    cap_rpm: int | None = None
    cap_tpm: int | None = None

    @property
    def hold(self) -> float | None:
        """Seconds during which nothing can be admitted (None: something can)."""
        holds = [
            reset
            for left, reset in (
                (self.requests_left, self.requests_reset),
                (self.tokens_left, self.tokens_reset),
            )
            if left is not None and left <= 0 and reset
        ]
        return max(holds) if holds else None


def plan(info: RateLimitInfo, limits: ModelLimits, *, in_flight_tokens: int = 0) -> Adaptation:
    """The adaptation ``info`` calls for under the configured ``limits``, given the tokens
    this process's other requests still in flight reserved: they will use up part of what
    remains before anything admitted now could (requests in flight are the limiter's to
    count)."""
    requests_left = requests_reset = tokens_left = tokens_reset = None
    if info.remaining_requests is not None and info.reset_requests:
        requests_left = info.remaining_requests
        requests_reset = info.reset_requests
    if info.remaining_tokens is not None and info.reset_tokens:
        tokens_left = max(0, info.remaining_tokens - in_flight_tokens)
        tokens_reset = info.reset_tokens
    cap_rpm = cap_tpm = None
    if limits.rpm is not None and info.limit_requests and info.limit_requests < limits.rpm:
        cap_rpm = info.limit_requests
    if limits.tpm is not None and info.limit_tokens and info.limit_tokens < limits.tpm:
        cap_tpm = info.limit_tokens
    return Adaptation(requests_left, requests_reset, tokens_left, tokens_reset, cap_rpm, cap_tpm)
