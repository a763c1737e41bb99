"""FastAPI dependencies as ``Annotated`` aliases: ``Ctx`` for the service context and
``ReadKey`` / ``RunKey`` / ``AdminKey`` for a caller holding at least that scope.

Scopes nest (admin ⊇ run ⊇ read). A missing or bad key is 401, a valid key without the scope
403. Routes put ``key_id=principal.key_id`` into the ``CallContext`` of every LLM request so
the key's requests/min, tokens/min and budget are enforced by the ``llm`` layer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from arbor.service.auth import Principal
from arbor.service.context import ServiceContext

__all__ = [
    "AdminKey",
    "Ctx",
    "Principal",
    "ReadKey",
    "RunKey",
    "authenticate",
    "get_context",
    "require_scope",
]

Scope = Literal["read", "run", "admin"]


def get_context(request: Request) -> ServiceContext:
    """The context of the app serving ``request``."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ServiceContext, Depends(get_context)]


async def authenticate(request: Request) -> Principal:
    """The request's verified caller, authenticated once per request."""
    state = request.scope.setdefault("state", {})
    principal = state.get("principal")
    if principal is None:
        principal = await get_context(request).auth.authenticate(request.headers)
        state["principal"] = principal
    assert isinstance(principal, Principal)
    return principal


# Declares the scheme in OpenAPI (so clients and schemathesis know to send a key); the
# header is read and checked by ``authenticate``, which also accepts ``x-api-key``.
_bearer = HTTPBearer(auto_error=False, description="An Arbor API key (arb_...)")


def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency giving the caller if its key grants ``scope`` (401/403 otherwise)."""

    async def dependency(
        request: Request,
        _declared: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Principal:
        principal = await authenticate(request)
        principal.require(scope)
        return principal

    dependency.__name__ = f"require_{scope}_scope"
    return dependency


ReadKey = Annotated[Principal, Depends(require_scope("read"))]
RunKey = Annotated[Principal, Depends(require_scope("run"))]
AdminKey = Annotated[Principal, Depends(require_scope("admin"))]
