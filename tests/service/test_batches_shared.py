"""Several servers on one database (SQLite file and PostgreSQL): a batch created on one is
joined by the other's poller, both drive it, and every item has exactly one result and one
upstream call; agent batches over the API run the stored agent per row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from test_batches_api import wait_done

from arbor.agents.definitions import AgentDefinition
from arbor.core.config import Settings
from arbor.llm.model import Model
from arbor.llm.types import ChatRequest
from arbor.service.context import ServiceContext, open_context
from arbor.store import AgentRepository
from arbor.testing import FunctionModel


async def slow_echo(request: ChatRequest) -> str:
    await asyncio.sleep(0.01)
    return f"seen: {request.messages[-1].content}"


@pytest.fixture
def service_models() -> dict[str, Model]:
    return {"test:echo": FunctionModel(slow_echo, name="slow-echo")}


@pytest.fixture
def service_settings_overrides(db_url: str) -> dict[str, Any]:
    """Both backends; the second server polls for batches to join every 50 ms."""
    return {"database_url": db_url, "service": {"batch_poll_seconds": 0.05}}


@pytest.fixture
def second_model() -> FunctionModel:
    return FunctionModel(slow_echo, name="slow-echo")


@pytest.fixture
async def second_ctx(
    service_settings: Settings, second_model: FunctionModel, service_ctx: ServiceContext
) -> AsyncIterator[ServiceContext]:
    """Another server on the same (already migrated) database, with its own model double."""
    ctx = await open_context(service_settings, models={"test:echo": second_model})
    try:
        yield ctx
    finally:
        await ctx.aclose()


async def test_the_other_servers_poller_joins_and_items_get_one_result_each(
    http: httpx.AsyncClient,
    second_ctx: ServiceContext,
    service_models: dict[str, Model],
    second_model: FunctionModel,
) -> None:
    assert second_ctx.batches is not None
    await second_ctx.batches.start()  # what the app's start-up does: join, then poll
    rows = [{"n": n} for n in range(80)]
    r = await http.post("/v1/batches", json={"template": "{{ n }}", "rows": rows, "concurrency": 3})
    assert r.status_code == 202, r.text
    batch_id = r.json()["id"]
    done = await wait_done(http, batch_id, within=30)
    assert done["status"] == "succeeded"
    assert done["progress"]["succeeded"] == 80 and done["progress"]["total"] == 80
    page = (await http.get(f"/v1/batches/{batch_id}/items", params={"limit": 500})).json()
    assert sorted(i["item"] for i in page["items"]) == list(range(80))
    assert {i["output"] for i in page["items"]} == {f"seen: {n}" for n in range(80)}
    first = service_models["test:echo"]
    assert isinstance(first, FunctionModel)
    calls = first.calls + second_model.calls
    prompts = sorted(str(c.messages[-1].content) for c in calls)
    assert prompts == sorted(str(n) for n in range(80))  # one upstream call per item
    assert first.calls and second_model.calls  # both servers did part of it


async def test_an_agent_batch_over_the_api(
    http: httpx.AsyncClient, service_ctx: ServiceContext
) -> None:
    definition = AgentDefinition(name="greeter", instructions="Greet.", model="test:echo")
    await AgentRepository(service_ctx.db).create("greeter", definition.to_document())
    r = await http.post("/v1/batches", json={"agent": "greeter", "rows": ["Ada", {"input": "Bob"}]})
    assert r.status_code == 202, r.text
    done = await wait_done(http, r.json()["id"], within=20)
    assert done["kind"] == "agent" and done["target"] == "agent: greeter"
    assert done["progress"]["succeeded"] + done["progress"]["failed"] == 2
    items = (await http.get(f"/v1/batches/{done['id']}/items")).json()["items"]
    assert items[0]["status"] == "succeeded", items[0]
