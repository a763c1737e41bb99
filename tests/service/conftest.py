"""Service fixtures: a :class:`ServiceContext` on a temporary SQLite database whose default
model ``test:echo`` is a :class:`FunctionModel` (no network, no GGUF), the app built from it,
an admin key, and ``http``: an ``httpx.AsyncClient`` over the app (ASGI, in process) sending
that key. ``make_http`` builds more clients with other headers (or none).

Override ``service_models`` in a test module to serve other doubles, and
``service_settings_overrides`` to change settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from arbor.core.config import Settings, load_settings
from arbor.llm.model import Model
from arbor.llm.types import ChatRequest
from arbor.service.app import create_app
from arbor.service.context import ServiceContext, open_context
from arbor.testing import FunctionModel

MakeHTTP = Callable[..., httpx.AsyncClient]


def echo(request: ChatRequest) -> str:
    """The default double's reply: the last user message, echoed."""
    last = next((m for m in reversed(request.messages) if m.role == "user"), None)
    return f"echo: {last.content if last is not None else ''}"


@pytest.fixture
def service_models() -> dict[str, Model]:
    return {"test:echo": FunctionModel(echo, name="echo")}


@pytest.fixture
def service_settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def service_settings(tmp_path: Path, service_settings_overrides: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {
        "home": tmp_path / "home",
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'service.db'}",
        "default_model": "test:echo",
        "llm": {"cache": {"enabled": False}},
        **service_settings_overrides,
    }
    return load_settings(**values)


@pytest.fixture
async def service_ctx(
    service_settings: Settings, service_models: dict[str, Model]
) -> AsyncIterator[ServiceContext]:
    ctx = await open_context(service_settings, models=service_models)
    try:
        yield ctx
    finally:
        await ctx.aclose()


@pytest.fixture
def app(service_ctx: ServiceContext) -> FastAPI:
    return create_app(service_ctx)


@pytest.fixture
async def admin_key(service_ctx: ServiceContext) -> str:
    return (await service_ctx.keys.create("test-admin", scopes=["admin"])).key


@pytest.fixture
async def make_http(app: FastAPI) -> AsyncIterator[MakeHTTP]:
    """``make_http(key=None, **headers)``: a client over the app; close it or use ``async
    with``. Clients still open at the end of the test are closed."""
    made: list[httpx.AsyncClient] = []

    def make(key: str | None = None, **headers: str) -> httpx.AsyncClient:
        sent = {k.replace("_", "-"): v for k, v in headers.items()}
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=sent
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
async def http(make_http: MakeHTTP, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with make_http(admin_key) as client:
        yield client
