"""/v1/agents: create (validated like definition files), read, list with pages and filters,
update, enable/disable (flapping visible), delete, and the 4xx answers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from arbor.service.context import ServiceContext
from arbor.store import AgentRepository

PROBLEM = "application/problem+json"
REVIEWER = {"name": "strict-reviewer", "role": "reviewer", "model": "openai:gpt-4o-mini"}


async def create(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/v1/agents", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_create_then_read_by_name_and_id(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/agents", json={**REVIEWER, "description": "picky"})
    assert response.status_code == 201, response.text
    agent = response.json()
    assert response.headers["location"] == "/v1/agents/strict-reviewer"
    assert agent["id"].startswith("agt_") and agent["status"] == "enabled"
    assert (agent["role"], agent["model"], agent["description"]) == (
        "reviewer",
        "openai:gpt-4o-mini",
        "picky",
    )
    assert agent["definition"]["max_steps"] == 10  # defaults filled in by the definition
    assert agent["failures"] == []
    assert (await http.get("/v1/agents/strict-reviewer")).json() == agent
    assert (await http.get(f"/v1/agents/{agent['id']}")).json() == agent

    taken = await http.post("/v1/agents", json=REVIEWER)
    assert taken.status_code == 409 and taken.headers["content-type"] == PROBLEM
    assert "already exists" in taken.json()["detail"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": "Bad Name", "role": "reviewer"}, "slug"),
        ({"name": "x", "role": "astrologer"}, "unknown role"),
        ({"name": "x"}, "give a role or instructions"),
        ({"name": "x", "role": "reviewer", "colour": "red"}, "colour"),
        ({"name": "x", "role": "reviewer", "model": "gpt-4o"}, "provider:model"),
        ({"name": "x", "role": "reviewer", "max_steps": 0}, "max_steps"),
        ({"role": "reviewer"}, "name"),
    ],
)
async def test_invalid_definitions_are_422(
    http: httpx.AsyncClient, service_ctx: ServiceContext, body: dict[str, Any], fragment: str
) -> None:
    response = await http.post("/v1/agents", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert fragment in response.text
    assert await AgentRepository(service_ctx.db).list() == []


async def test_list_pages_by_name_and_filters_by_status(http: httpx.AsyncClient) -> None:
    for name in ("delta", "alpha", "charlie", "bravo"):
        await create(http, {"name": name, "instructions": f"You are {name}."})
    await http.post("/v1/agents/charlie/disable")
    names: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/v1/agents", params=params)).json()
        names += [a["name"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == ["alpha", "bravo", "charlie", "delta"]
    disabled = (await http.get("/v1/agents", params={"status": "disabled"})).json()
    assert [a["name"] for a in disabled["items"]] == ["charlie"]
    for params in ({"status": "asleep"}, {"limit": 0}, {"cursor": "!!"}):
        bad = await http.get("/v1/agents", params=params)
        assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM, params


async def test_update_changes_fields_and_revalidates(http: httpx.AsyncClient) -> None:
    created = await create(http, REVIEWER)
    response = await http.patch(
        "/v1/agents/strict-reviewer", json={"model": "test:echo", "max_steps": 3}
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["id"], updated["model"]) == (created["id"], "test:echo")
    assert updated["definition"]["max_steps"] == 3 and updated["role"] == "reviewer"
    cleared = (await http.patch("/v1/agents/strict-reviewer", json={"model": None})).json()
    assert cleared["model"] is None and "model" not in cleared["definition"]

    for body, fragment in [
        ({"role": None}, "give a role or instructions"),
        ({"temperature": 9}, "temperature"),
        ({"name": "renamed"}, "name"),
    ]:
        bad = await http.patch("/v1/agents/strict-reviewer", json=body)
        assert bad.status_code == 422, body
        assert fragment in bad.json()["detail"], bad.json()
    assert (await http.get("/v1/agents/strict-reviewer")).json()["role"] == "reviewer"


async def test_disable_enable_and_flapping_are_visible(
    http: httpx.AsyncClient, service_ctx: ServiceContext
) -> None:
    agent = await create(http, REVIEWER)
    disabled = (await http.post("/v1/agents/strict-reviewer/disable")).json()
    assert disabled["status"] == "disabled"
    assert (await http.post("/v1/agents/strict-reviewer/enable")).json()["status"] == "enabled"

    repo = AgentRepository(service_ctx.db)
    for _ in range(3):
        await repo.record_failure(agent["id"], threshold=3, window=timedelta(minutes=5))
    flapping = (await http.get("/v1/agents/strict-reviewer")).json()
    assert flapping["status"] == "disabled_flapping" and len(flapping["failures"]) == 3
    listed = (await http.get("/v1/agents", params={"status": "disabled_flapping"})).json()
    assert [a["name"] for a in listed["items"]] == ["strict-reviewer"]
    enabled = (await http.post("/v1/agents/strict-reviewer/enable")).json()
    assert (enabled["status"], enabled["failures"]) == ("enabled", [])


async def test_delete(http: httpx.AsyncClient) -> None:
    await create(http, REVIEWER)
    response = await http.delete("/v1/agents/strict-reviewer")
    assert response.status_code == 204 and response.content == b""
    assert (await http.get("/v1/agents/strict-reviewer")).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/agents/ghost", None),
        ("GET", "/v1/agents/agt_ghost", None),
        ("PATCH", "/v1/agents/ghost", {"model": "test:echo"}),
        ("DELETE", "/v1/agents/ghost", None),
        ("POST", "/v1/agents/ghost/enable", None),
        ("POST", "/v1/agents/ghost/disable", None),
    ],
)
async def test_unknown_agents_are_404(
    http: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await http.request(method, path, json=body)
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert "not found" in response.json()["detail"]


async def test_changing_agents_needs_the_admin_scope(
    http: httpx.AsyncClient, make_http: Any, service_ctx: ServiceContext
) -> None:
    await create(http, REVIEWER)
    for scope in ("read", "run"):
        client = make_http((await service_ctx.keys.create(scope, scopes=[scope])).key)
        assert (await client.get("/v1/agents")).status_code == 200
        assert (await client.get("/v1/agents/strict-reviewer")).status_code == 200
        for method, path, body in [
            ("POST", "/v1/agents", {**REVIEWER, "name": "other"}),
            ("PATCH", "/v1/agents/strict-reviewer", {"max_steps": 2}),
            ("DELETE", "/v1/agents/strict-reviewer", None),
            ("POST", "/v1/agents/strict-reviewer/disable", None),
        ]:
            refused = await client.request(method, path, json=body)
            assert refused.status_code == 403, (scope, method, path)
            assert refused.headers["content-type"] == PROBLEM
    assert (await make_http().get("/v1/agents")).status_code == 401
    assert (await http.get("/v1/agents/strict-reviewer")).json()["definition"]["max_steps"] == 10
