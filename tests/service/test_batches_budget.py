"""A batch's budget over the API: when spent the batch pauses (reason ``budget``) with the
rest pending; resuming with a larger budget finishes it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from test_batches_api import wait_done

from arbor.service.context import ServiceContext


@pytest.fixture
def service_settings_overrides() -> dict[str, Any]:
    # A tenth of a cent per token: each call reserves ~1 USD (its prompt plus 1024 tokens
    # of reply) and spends ~1 cent, so a 1.2 USD budget runs some items, then pauses.
    price = {"input": 1000.0, "output": 1000.0}
    return {"llm": {"cache": {"enabled": False}, "prices": {"test:echo": price}}}


async def test_budget_pauses_then_resume_with_more_finishes(http: httpx.AsyncClient) -> None:
    rows = [{"w": f"word {n}"} for n in range(30)]
    r = await http.post(
        "/v1/batches",
        json={"template": "{{ w }}", "rows": rows, "budget_usd": 1.2, "concurrency": 1},
    )
    assert r.status_code == 202, r.text
    paused = await wait_done(http, r.json()["id"])
    assert (paused["status"], paused["paused_reason"]) == ("paused", "budget")
    p = paused["progress"]
    assert 0 < p["succeeded"] < 30 and p["pending"] == 30 - p["succeeded"] - p["failed"]
    assert p["cost_usd"] > 0
    r = await http.post(f"/v1/batches/{paused['id']}/resume", json={"budget_usd": 100_000})
    assert r.status_code == 200, r.text
    done = await wait_done(http, paused["id"])
    assert done["status"] == "succeeded" and done["progress"]["succeeded"] == 30


async def test_the_creating_keys_budget_applies_to_its_batch(
    service_ctx: ServiceContext, make_http: Any
) -> None:
    created = await service_ctx.keys.create("frugal", scopes=["run"], budget_usd=1.2)
    async with make_http(created.key) as http:
        rows = [{"w": f"word {n}"} for n in range(30)]
        r = await http.post("/v1/batches", json={"template": "{{ w }}", "rows": rows})
        assert r.status_code == 202, r.text
        paused = await wait_done(http, r.json()["id"])
    assert (paused["status"], paused["paused_reason"]) == ("paused", "budget")
    assert 0 < paused["progress"]["succeeded"] < 30
