"""Usage page: totals per day/key/agent/model from the usage table, names next to ids, a
non-admin key limited to its own usage, bad ranges refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from _pages import Login

from arbor.service.context import ServiceContext
from arbor.store import AgentRepository, UsageRecord, UsageRepository

Browser = tuple[httpx.AsyncClient, str]


async def _seed(ctx: ServiceContext) -> tuple[str, str]:
    mine = await ctx.keys.create("team-a", scopes=["read"])
    theirs = await ctx.keys.create("team-b", scopes=["read"])
    agent = await AgentRepository(ctx.db).create(
        "summarizer", {"name": "summarizer", "instructions": "x"}
    )
    yesterday = datetime.now(UTC) - timedelta(days=1)
    await UsageRepository(ctx.db).add_many(
        [
            UsageRecord(
                provider="openai",
                model="gpt-a",
                input_tokens=100,
                output_tokens=20,
                cost_usd=0.5,
                key_id=mine.record.id,
                agent_id=agent.id,
            ),
            UsageRecord(
                provider="openai",
                model="gpt-a",
                input_tokens=10,
                output_tokens=5,
                cost_usd=0.25,
                key_id=mine.record.id,
                created_at=yesterday,
            ),
            UsageRecord(
                provider="local",
                model="tiny",
                input_tokens=7000,
                output_tokens=1,
                cost_usd=3.0,
                key_id=theirs.record.id,
                status="timeout",
            ),
        ]
    )
    return mine.key, mine.record.id


async def test_admin_sees_every_group(admin_browser: Browser, service_ctx: ServiceContext) -> None:
    client, _ = admin_browser
    _, mine_id = await _seed(service_ctx)
    by_model = await client.get("/usage?group_by=model")
    assert by_model.status_code == 200
    assert "openai:gpt-a" in by_model.text
    assert "local:tiny" in by_model.text
    assert "$3.75" in by_model.text  # the total
    by_key = await client.get("/usage?group_by=key")
    assert "team-a" in by_key.text and mine_id in by_key.text
    by_agent = await client.get("/usage?group_by=agent")
    assert "summarizer" in by_agent.text
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    by_day = await client.get(f"/usage?group_by=day&since={today}&until={today}")
    assert today in by_day.text
    assert (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d") not in by_day.text
    one_key = await client.get(f"/usage?group_by=model&key_id={mine_id}")
    assert "local:tiny" not in one_key.text


async def test_a_non_admin_sees_only_its_own_usage(
    browser: httpx.AsyncClient, service_ctx: ServiceContext, login: Login
) -> None:
    key, _ = await _seed(service_ctx)
    await login(browser, key)
    page = await browser.get("/usage?group_by=model")
    assert page.status_code == 200
    assert "openai:gpt-a" in page.text
    assert "local:tiny" not in page.text
    assert "your key only" in page.text
    other = next(k.id for k in await service_ctx.keys.list() if k.name == "team-b")
    assert (await browser.get(f"/usage?key_id={other}")).status_code == 403


async def test_bad_usage_queries_are_refused(admin_browser: Browser) -> None:
    client, _ = admin_browser
    assert (await client.get("/usage?group_by=week")).status_code == 422
    assert (await client.get("/usage?since=yesterday")).status_code == 422
    answer = await client.get("/usage?since=2026-02-02&until=2026-01-01")
    assert answer.status_code == 422
    assert "since" in answer.text
