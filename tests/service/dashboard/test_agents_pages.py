"""Agents pages: list with statuses (flapping included), create and edit through the form
(validated like the API), enable/disable, CSRF and admin scope enforced, HTML escaped."""

from __future__ import annotations

import httpx
import pytest
from _pages import Login, csrf_of

from arbor.agents.definitions import AgentDefinition, AgentDefinitionError
from arbor.service.context import ServiceContext
from arbor.service.dashboard.agents import definition_from_form
from arbor.store import AgentRepository

Browser = tuple[httpx.AsyncClient, str]


async def test_create_an_agent_through_the_form(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, token = admin_browser
    form = await client.get("/agents/new")
    assert form.status_code == 200
    assert 'name="instructions"' in form.text
    answer = await client.post(
        "/agents/new",
        data={
            "csrf_token": token,
            "name": "helper",
            "description": "Answers <b>politely</b>",
            "role": "developer",
            "model": "test:echo",
            "variables": "context: a dry audience\nrequirements: engineers",
            "max_steps": "4",
            "temperature": "0.2",
            "memory_max_messages": "12",
            "memory_strategy": "summarize",
        },
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/agents/helper"
    record = await AgentRepository(service_ctx.db).get_by_name("helper")
    variables = {"context": "a dry audience", "requirements": "engineers"}
    assert record.definition["variables"] == variables
    assert record.definition["max_steps"] == 4
    assert record.definition["temperature"] == 0.2
    assert record.definition["memory"]["strategy"] == "summarize"
    listing = await client.get("/agents")
    assert 'data-agent="helper"' in listing.text
    assert "Answers &lt;b&gt;politely&lt;/b&gt;" in listing.text
    assert "<b>politely</b>" not in listing.text
    detail = await client.get("/agents/helper")
    assert detail.status_code == 200
    assert "test:echo" in detail.text


async def test_a_bad_definition_comes_back_with_the_reason_and_the_values(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, token = admin_browser
    answer = await client.post(
        "/agents/new",
        data={"csrf_token": token, "name": "Bad Name", "instructions": "Keep me"},
    )
    assert answer.status_code == 422
    assert "slug" in answer.text
    assert "Keep me" in answer.text
    answer = await client.post(
        "/agents/new",
        data={"csrf_token": token, "name": "ok", "instructions": "x", "max_steps": "many"},
    )
    assert answer.status_code == 422
    assert "max_steps" in answer.text
    assert await AgentRepository(service_ctx.db).list() == []


async def test_a_taken_name_is_a_conflict(admin_browser: Browser) -> None:
    client, token = admin_browser
    data = {"csrf_token": token, "name": "twin", "instructions": "x"}
    assert (await client.post("/agents/new", data=data)).status_code == 303
    again = await client.post("/agents/new", data=data)
    assert again.status_code == 409
    assert "twin" in again.text


async def test_edit_keeps_the_name_and_changes_fields(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, token = admin_browser
    await AgentRepository(service_ctx.db).create("writer", {"name": "writer", "role": "developer"})
    form = await client.get("/agents/writer/edit")
    assert form.status_code == 200
    assert 'value="developer" selected' in form.text
    answer = await client.post(
        "/agents/writer/edit",
        data={"csrf_token": token, "name": "renamed", "role": "developer", "max_steps": "3"},
    )
    assert answer.status_code == 303
    record = await AgentRepository(service_ctx.db).get_by_name("writer")
    assert record.definition["max_steps"] == 3


async def test_flapping_agents_show_and_can_be_enabled(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, token = admin_browser
    repo = AgentRepository(service_ctx.db)
    record = await repo.create("shaky", {"name": "shaky", "instructions": "x"})
    await repo.set_status(record.id, "disabled_flapping")
    listing = await client.get("/agents?status=disabled_flapping")
    assert 'data-agent="shaky"' in listing.text
    assert "badge disabled_flapping" in listing.text
    overview = await client.get("/")
    assert "shaky" in overview.text
    answer = await client.post("/agents/shaky/enable", data={"csrf_token": token})
    assert answer.status_code == 303
    assert (await repo.get(record.id)).status == "enabled"
    answer = await client.post("/agents/shaky/disable", data={"csrf_token": token})
    assert (await repo.get(record.id)).status == "disabled"


async def test_state_changes_without_the_csrf_token_are_refused(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, _ = admin_browser
    repo = AgentRepository(service_ctx.db)
    record = await repo.create("guarded", {"name": "guarded", "instructions": "x"})
    for data in ({}, {"csrf_token": "forged"}):
        answer = await client.post("/agents/guarded/disable", data=data)
        assert answer.status_code == 403
        assert "CSRF" in answer.text
        answer = await client.post("/agents/new", data={**data, "name": "n", "instructions": "x"})
        assert answer.status_code == 403
    assert (await repo.get(record.id)).status == "enabled"
    assert [a.name for a in await repo.list()] == ["guarded"]


async def test_the_header_token_works_for_htmx_requests(
    admin_browser: Browser, service_ctx: ServiceContext
) -> None:
    client, token = admin_browser
    repo = AgentRepository(service_ctx.db)
    record = await repo.create("viahtmx", {"name": "viahtmx", "instructions": "x"})
    answer = await client.post(
        "/agents/viahtmx/disable", headers={"X-CSRF-Token": token, "HX-Request": "true"}
    )
    assert answer.status_code == 303
    assert (await repo.get(record.id)).status == "disabled"


async def test_a_read_key_sees_agents_but_cannot_change_them(
    browser: httpx.AsyncClient, service_ctx: ServiceContext, login: Login
) -> None:
    await AgentRepository(service_ctx.db).create("solo", {"name": "solo", "instructions": "x"})
    reader = await service_ctx.keys.create("reader", scopes=["read"])
    token = await login(browser, reader.key)
    listing = await browser.get("/agents")
    assert 'data-agent="solo"' in listing.text
    assert "/agents/new" not in listing.text
    assert (await browser.get("/agents/new")).status_code == 403
    answer = await browser.post("/agents/solo/disable", data={"csrf_token": token})
    assert answer.status_code == 403
    assert "admin scope" in answer.text
    assert csrf_of(listing.text) == token


async def test_unknown_agent_and_bad_filter(admin_browser: Browser) -> None:
    client, _ = admin_browser
    missing = await client.get("/agents/nobody")
    assert missing.status_code == 404
    assert "nobody" in missing.text
    assert "text/html" in missing.headers["content-type"]
    bad = await client.get("/agents?status=<x>")
    assert bad.status_code == 422
    assert "<x>" not in bad.text


def test_an_edit_keeps_stored_fields_the_form_does_not_show() -> None:
    base = {"name": "tooled", "instructions": "x", "tools": ["search"], "max_steps": 9}
    values = {"name": "tooled", "instructions": "y", "max_steps": "2"}
    if "tools" in AgentDefinition.model_fields:
        definition = definition_from_form(values, base=base)
        assert definition.to_document()["tools"] == ["search"]
        assert definition.max_steps == 2 and definition.instructions == "y"
    else:  # the field reached validation: it was kept, not silently dropped
        with pytest.raises(AgentDefinitionError, match="tools"):
            definition_from_form(values, base=base)
    cleared = definition_from_form(
        {"name": "plain", "instructions": "y"}, base={"name": "plain", "model": "a:b"}
    )
    assert cleared.model is None  # a form field left blank is cleared, not kept
