"""FastAPI dependencies as ``Annotated`` aliases: ``Ctx`` for the service context and
``ReadKey`` / ``RunKey`` / ``AdminKey`` for a caller holding at least that scope.

Scopes nest (admin ⊇ run ⊇ read). A missing or bad key is 401, a valid key without the scope
403 — before anything about the request's body is reported: FastAPI reads the body before it
runs dependencies, so :class:`KeyFirstRoute` checks the key again when parsing failed, and a
caller without a key never learns what a route accepts. Routes put ``key_id=principal.key_id``
into the ``CallContext`` of every LLM request so the key's requests/min, tokens/min and budget
are enforced by the ``llm`` layer.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.responses import Response

from arbor.service.auth import Principal
from arbor.service.context import ServiceContext

__all__ = [
    "AdminKey",
    "Ctx",
    "KeyFirstRoute",
    "Principal",
    "ReadKey",
    "RunKey",
    "ScopeCheck",
    "authenticate",
    "context_of",
    "get_context",
    "require_scope",
]

Scope = Literal["read", "run", "admin"]


def context_of(request: Request) -> ServiceContext:
    """The context of the app serving ``request``."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


async def get_context(request: Request) -> ServiceContext:
    """``context_of`` as a dependency: a coroutine, because FastAPI runs a plain ``def``
    dependency in its thread pool, a hop that costs more than most routes' own work."""
    return context_of(request)


Ctx = Annotated[ServiceContext, Depends(get_context)]


async def authenticate(request: Request) -> Principal:
    """The request's verified caller, authenticated once per request."""
    state = request.scope.setdefault("state", {})
    principal = state.get("principal")
    if principal is None:
        principal = await context_of(request).auth.authenticate(request.headers)
        state["principal"] = principal
    assert isinstance(principal, Principal)
    return principal


# Declares the scheme in OpenAPI (so clients and schemathesis know to send a key); the
# header is read and checked by ``authenticate``, which also accepts ``x-api-key``.
_bearer = HTTPBearer(auto_error=False, description="An Arbor API key (arb_...)")


class ScopeCheck:
    """A dependency giving the caller if its key grants ``scope`` (401/403 otherwise)."""

    def __init__(self, scope: Scope) -> None:
        self.scope: Scope = scope
        self.__name__ = f"require_{scope}_scope"

    async def __call__(
        self,
        request: Request,
        _declared: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Principal:
        principal = await authenticate(request)
        principal.require(self.scope)
        return principal


def require_scope(scope: Scope) -> ScopeCheck:
    """A dependency giving the caller if its key grants ``scope`` (401/403 otherwise)."""
    return ScopeCheck(scope)


def _scope_of(dependant: Dependant) -> Scope | None:
    for dep in dependant.dependencies:
        if isinstance(dep.call, ScopeCheck):
            return dep.call.scope
        found = _scope_of(dep)
        if found is not None:
            return found
    return None


class KeyFirstRoute(APIRoute):
    """A route whose key check comes before any complaint about the body: a body FastAPI
    could not parse (it parses before running dependencies) is answered 401/403 when the
    key is missing, bad or short of the scope, and 400/422 only for a caller with access."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scope = _scope_of(self.dependant)
        if scope is None:
            return handler

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except (RequestValidationError, HTTPException):
                # Authenticated once per request: a caller that passed costs a dict lookup.
                (await authenticate(request)).require(scope)
                raise

        return route


ReadKey = Annotated[Principal, Depends(require_scope("read"))]
RunKey = Annotated[Principal, Depends(require_scope("run"))]
AdminKey = Annotated[Principal, Depends(require_scope("admin"))]
