"""Errors only the HTTP service raises; every one is an :class:`~arbor.core.errors.ArborError`
so :mod:`arbor.service.problems` maps it to a status like the rest::

    ArborError
    ├── AuthError
    │   └── ForbiddenError           the key is valid but lacks the scope (403)
    ├── PayloadTooLargeError         the body is over the configured limit (413)
    └── RequestRateLimitedError      the key's requests/min are used up (429 + Retry-After)
"""

from __future__ import annotations

from arbor.core.errors import ArborError, AuthError

__all__ = [
    "ForbiddenError",
    "PayloadTooLargeError",
    "RequestRateLimitedError",
]


class ForbiddenError(AuthError):
    kind = "forbidden"


class PayloadTooLargeError(ArborError):
    kind = "payload_too_large"

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class RequestRateLimitedError(ArborError):
    kind = "rate_limited"
    retriable = True

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        #: Seconds until the key may send again.
        self.retry_after = retry_after
