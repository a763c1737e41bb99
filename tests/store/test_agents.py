from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from arbor.core.errors import NotFoundError
from arbor.store import AgentExistsError, AgentRepository, Database

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEFINITION: dict[str, Any] = {
    "role": "reviewer",
    "instructions": "Review the diff; answer APPROVE or REVISE with reasons.",
    "model": "local:smollm2",
    "tools": ["read_file", "run_tests"],
    "memory": {"max_messages": 50, "max_tokens": 8000, "policy": "summarise"},
}


async def test_create_and_get_by_id_and_name(db: Database) -> None:
    agents = AgentRepository(db)
    agent = await agents.create("reviewer", DEFINITION)
    assert agent.id.startswith("agt_") and agent.enabled and agent.failures == ()
    assert agent.definition == DEFINITION and agent.created_at == agent.updated_at
    assert await agents.get(agent.id) == agent
    assert await agents.get_by_name("reviewer") == agent
    with pytest.raises(NotFoundError, match="agt_nope"):
        await agents.get("agt_nope")
    with pytest.raises(NotFoundError, match="nobody"):
        await agents.get_by_name("nobody")


async def test_find_by_name_or_id(db: Database) -> None:
    agents = AgentRepository(db)
    agent = await agents.create("planner", DEFINITION)
    assert await agents.find("planner") == agent
    assert await agents.find(agent.id) == agent
    with pytest.raises(NotFoundError, match="'agt_nope' not found"):
        await agents.find("agt_nope")
    with pytest.raises(NotFoundError, match="'nobody' not found"):
        await agents.find("nobody")


async def test_names_are_unique(db: Database) -> None:
    agents = AgentRepository(db)
    await agents.create("coder", {"role": "coder"})
    with pytest.raises(AgentExistsError, match="coder") as info:
        await agents.create("coder", {"role": "other"})
    assert info.value.name == "coder" and info.value.kind == "conflict"
    assert (await agents.get_by_name("coder")).definition == {"role": "coder"}


async def test_list_by_name_and_status(db: Database) -> None:
    agents = AgentRepository(db)
    for name in ("planner", "coder", "reviewer"):
        await agents.create(name, {"role": name})
    coder = await agents.get_by_name("coder")
    await agents.set_status(coder.id, "disabled")
    assert [a.name for a in await agents.list()] == ["coder", "planner", "reviewer"]
    assert [a.name for a in await agents.list(status="enabled")] == ["planner", "reviewer"]
    assert [a.name for a in await agents.list(status="disabled")] == ["coder"]
    assert await agents.list(status="disabled_flapping") == []
    with pytest.raises(ValueError, match="agent status"):
        await agents.list(status="asleep")  # type: ignore[arg-type]


async def test_update_definition_put_and_delete(db: Database) -> None:
    agents = AgentRepository(db)
    agent = await agents.create("writer", {"role": "writer"})
    updated = await agents.update_definition(agent.id, {"role": "writer", "model": "openai:x"})
    assert updated.definition["model"] == "openai:x" and updated.updated_at >= agent.updated_at
    assert updated.created_at == agent.created_at
    # put: replace by name (YAML loading), keeping id and status; or create.
    await agents.set_status(agent.id, "disabled")
    replaced = await agents.put("writer", {"role": "technical writer"})
    assert (replaced.id, replaced.status) == (agent.id, "disabled")
    assert replaced.definition == {"role": "technical writer"}
    fresh = await agents.put("qa", {"role": "qa"})
    assert fresh.enabled and await agents.get_by_name("qa") == fresh
    await agents.delete(agent.id)
    with pytest.raises(NotFoundError):
        await agents.get(agent.id)
    for call in (
        agents.delete(agent.id),
        agents.update_definition(agent.id, {}),
        agents.set_status(agent.id, "enabled"),
    ):
        with pytest.raises(NotFoundError):
            await call


async def test_flapping_agent_is_disabled_and_reenabled(db: Database) -> None:
    agents = AgentRepository(db)
    agent = await agents.create("flaky", DEFINITION)
    window = timedelta(minutes=1)
    # Failures spread wider than the window never trip the breaker.
    for i in range(5):
        spread = await agents.record_failure(
            agent.id, threshold=3, window=window, now=T0 + timedelta(minutes=i)
        )
        assert spread.enabled and len(spread.failures) == 1
    # Three within a minute do.
    base = T0 + timedelta(hours=1)
    for i in range(3):
        state = await agents.record_failure(
            agent.id, threshold=3, window=window, now=base + timedelta(seconds=10 * i)
        )
    assert state.status == "disabled_flapping" and len(state.failures) == 3
    assert state.failures[-1] == base + timedelta(seconds=20)
    assert [a.name for a in await agents.list(status="disabled_flapping")] == ["flaky"]
    enabled = await agents.set_status(agent.id, "enabled")
    assert enabled.enabled and enabled.failures == ()
    with pytest.raises(ValueError, match="timezone-aware"):
        await agents.record_failure(agent.id, threshold=3, window=window, now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="threshold"):
        await agents.record_failure(agent.id, threshold=0, window=window)


async def test_concurrent_failures_are_all_counted(db: Database) -> None:
    agents = AgentRepository(db)
    agent = await agents.create("busy", DEFINITION)
    await asyncio.gather(
        *(
            agents.record_failure(agent.id, threshold=100, window=timedelta(hours=1))
            for _ in range(10)
        )
    )
    assert len((await agents.get(agent.id)).failures) == 10
