"""The ``upstream`` fixture: a scriptable OpenAI-compatible server on loopback per test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from upstream_server import Upstream


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()

    async def dispatch(request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        state.handler_tasks.add(task)
        raw = await request.read()
        state.requests.append(json.loads(raw) if raw else {})
        state.headers.append({k.lower(): v for k, v in request.headers.items()})
        assert state.handler is not None, "the test did not set upstream.handler"
        return await state.handler(request)

    app = web.Application()
    app.router.add_route("*", "/v1/{tail:.*}", dispatch)
    runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield state
    finally:
        await runner.cleanup()
