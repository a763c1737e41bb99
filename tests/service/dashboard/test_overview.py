"""Overview: traffic figures from the app's own metrics (the dashboard's requests left out),
tokens and cost from the usage table, breaker states, things waiting for a person."""

from __future__ import annotations

import asyncio

import httpx

from arbor.service.context import ServiceContext
from arbor.store import UsageRecord, UsageRepository

Browser = tuple[httpx.AsyncClient, str]


async def test_overview_renders_traffic_usage_and_breakers(
    admin_browser: Browser, service_ctx: ServiceContext, http: httpx.AsyncClient
) -> None:
    client, _ = admin_browser
    first = await client.get("/")
    assert first.status_code == 200
    assert 'hx-get="/overview/panel"' in first.text
    assert "collecting a first reading" in first.text
    for _ in range(5):
        assert (await http.get("/v1/agents")).status_code == 200
    assert (await http.get("/v1/runs/run_missing")).status_code == 404
    await UsageRepository(service_ctx.db).add(
        UsageRecord(
            provider="openai", model="m", input_tokens=1200, output_tokens=34, cost_usd=0.125
        )
    )
    service_ctx.metrics.set_breaker("openai", "m", "open")
    await asyncio.sleep(1.05)  # the history takes at most one reading a second
    panel = await client.get("/overview/panel")
    assert panel.status_code == 200
    assert "API requests / s" in panel.text
    assert "peak" in panel.text  # two readings: a rate exists
    assert "1,234" in panel.text  # tokens
    assert "$0.1250" in panel.text
    assert "badge open" in panel.text
    assert "<polyline" in panel.text
    assert "4xx: 16.7 %" in panel.text  # one 404 among six API requests


async def test_a_waiting_run_needs_attention(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, _ = admin_browser
    assert service_ctx.runs is not None
    run_id = await service_ctx.runs.start("gate", {"task": "t"})
    await service_ctx.runs.wait(run_id, timeout=10)
    page = await client.get("/overview/panel")
    assert f'href="/runs/{run_id}"' in page.text
