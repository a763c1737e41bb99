"""Dashboard fixtures: the service app (see ../conftest.py) also serving the ``gate``
workflow (an approval node), browser-like clients that keep cookies, and ``login``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from _pages import Login, csrf_of, login_token_of
from fastapi import FastAPI

from _workflows import gate
from arbor.core.config import Settings
from arbor.llm.model import Model
from arbor.service.context import ServiceContext, open_context


@pytest.fixture
async def service_ctx(
    service_settings: Settings, service_models: dict[str, Model]
) -> AsyncIterator[ServiceContext]:
    ctx = await open_context(service_settings, models=service_models, workflows={"gate": gate})
    try:
        yield ctx
    finally:
        await ctx.aclose()


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client like a browser: no API key, cookies kept, redirects not followed."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


@pytest.fixture
def login() -> Login:
    """``await login(client, key)`` logs in and returns the session's CSRF token."""

    async def do(client: httpx.AsyncClient, key: str) -> str:
        client.cookies.clear()  # a fresh visitor
        form = await client.get("/login")
        assert form.status_code == 200
        answer = await client.post(
            "/login", data={"api_key": key, "login_token": login_token_of(form.text), "next": "/"}
        )
        assert answer.status_code == 303, answer.text
        page = await client.get("/agents")
        assert page.status_code == 200
        return csrf_of(page.text)

    return do


@pytest.fixture
async def admin_browser(
    browser: httpx.AsyncClient, admin_key: str, login: Login
) -> tuple[httpx.AsyncClient, str]:
    """A logged-in admin browser and its CSRF token."""
    token = await login(browser, admin_key)
    return browser, token
