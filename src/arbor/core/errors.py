"""Every error Arbor raises derives from :class:`ArborError`.

Errors carry the context a caller needs to act (provider, status, retry-after, run id) as
fields, never only inside the message. SDK exceptions are translated at the adapter with
``raise ... from exc`` so the original stays on ``__cause__``.

::

    ArborError
    ├── ConfigError                  bad settings; names the variable
    ├── ProviderError                an upstream model call failed
    │   ├── ProviderHTTPError        upstream answered with a non-2xx status
    │   │   ├── RateLimitedError     429
    │   │   └── ContextTooLongError  prompt exceeds the model's context window
    │   ├── ProviderConnectionError  connect/reset/disconnect before an answer
    │   ├── LLMTimeoutError          connect/read/total/stream-idle timeout
    │   ├── CircuitOpenError         breaker open: nothing was sent upstream
    │   └── UnknownModelError        no provider serves that model id
    ├── BudgetExceededError          a budget would be exceeded by this call
    ├── ToolError                    a tool raised or got invalid arguments
    ├── WorkflowError                a workflow run failed (carries run_id)
    ├── AuthError                    missing/invalid credentials or scope
    ├── InvalidRequestError          well-formed but not acceptable input (names the field)
    ├── ConflictError                the operation clashes with the current state
    └── NotFoundError                a stored object does not exist
"""

from __future__ import annotations

__all__ = [
    "ArborError",
    "AuthError",
    "BudgetExceededError",
    "CircuitOpenError",
    "ConfigError",
    "ConflictError",
    "ContextTooLongError",
    "InvalidRequestError",
    "LLMTimeoutError",
    "NotFoundError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderHTTPError",
    "RateLimitedError",
    "ToolError",
    "UnknownModelError",
    "WorkflowError",
]

# HTTP statuses worth another attempt: request timeout, conflict, rate limit, server errors.
RETRIABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class ArborError(Exception):
    """Base of every error Arbor raises."""

    #: A short machine-readable name, used in metrics labels and problem+json bodies.
    kind: str = "error"
    #: Whether repeating the same request could succeed.
    retriable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(ArborError):
    kind = "config"

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class ProviderError(ArborError):
    kind = "provider"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        #: Seconds the upstream asked us to wait, if it said so.
        self.retry_after = retry_after


class ProviderHTTPError(ProviderError):
    kind = "http"

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: str = "",
        provider: str = "",
        model: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, model=model, retry_after=retry_after)
        self.status_code = status_code
        self.body = body
        self.retriable = status_code in RETRIABLE_STATUSES or status_code >= 500


class RateLimitedError(ProviderHTTPError):
    kind = "rate_limited"


class ContextTooLongError(ProviderHTTPError):
    kind = "context_too_long"


class ProviderConnectionError(ProviderError):
    kind = "connection"
    retriable = True


class LLMTimeoutError(ProviderError):
    kind = "timeout"
    retriable = True

    def __init__(
        self, message: str, *, phase: str = "total", provider: str = "", model: str = ""
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        #: Which timeout fired: connect, read, total or stream_idle.
        self.phase = phase


class CircuitOpenError(ProviderError):
    kind = "circuit_open"


class UnknownModelError(ProviderError):
    kind = "unknown_model"


class BudgetExceededError(ArborError):
    kind = "budget_exceeded"

    def __init__(self, message: str, *, scope: str = "", limit_usd: float = 0.0) -> None:
        super().__init__(message)
        self.scope = scope
        self.limit_usd = limit_usd


class ToolError(ArborError):
    kind = "tool"

    def __init__(self, message: str, *, tool: str = "") -> None:
        super().__init__(message)
        self.tool = tool


class WorkflowError(ArborError):
    kind = "workflow"

    def __init__(self, message: str, *, run_id: str = "") -> None:
        super().__init__(message)
        self.run_id = run_id


class AuthError(ArborError):
    kind = "auth"


class InvalidRequestError(ArborError):
    kind = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        #: The offending request field, when there is one.
        self.param = param


class ConflictError(ArborError):
    kind = "conflict"


class NotFoundError(ArborError):
    kind = "not_found"
