"""Agent definitions: loading from YAML/JSON, validation errors, building, supervision."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from arbor.agents import (
    Agent,
    AgentDefinition,
    AgentDefinitionError,
    AgentDisabledError,
    InstructionsError,
    MemoryPolicy,
    RoleAgent,
    Supervisor,
    load_definitions,
    tool,
)
from arbor.agents.roles.outputs import Review
from arbor.core.errors import NotFoundError
from arbor.store import AgentRepository, Database


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- loading --------------------------------------------------------------------------


def test_load_single_mapping_yaml(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "one.yaml",
        "name: strict-reviewer\nrole: reviewer\nmodel: openai:gpt-4o-mini\n"
        "memory: {max_messages: 20, strategy: summarize}\nmax_steps: 4\n",
    )
    [d] = load_definitions(path)
    assert d.name == "strict-reviewer" and d.role == "reviewer"
    assert d.memory == MemoryPolicy(max_messages=20, strategy="summarize")
    assert d.max_steps == 4 and d.model == "openai:gpt-4o-mini"


def test_load_list_and_agents_key(tmp_path: Path) -> None:
    listed = _write(
        tmp_path,
        "list.yml",
        "- {name: a, instructions: Say hi}\n- {name: b, role: planner}\n",
    )
    keyed = _write(
        tmp_path,
        "keyed.yaml",
        "agents:\n  - name: c\n    role: coder\n  - name: d\n    instructions: Be brief.\n",
    )
    assert [d.name for d in load_definitions(listed)] == ["a", "b"]
    assert [d.name for d in load_definitions(keyed)] == ["c", "d"]


def test_load_json(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "agents.json",
        json.dumps({"agents": [{"name": "j", "role": "router", "temperature": 0.5}]}),
    )
    [d] = load_definitions(path)
    assert d.name == "j" and d.temperature == 0.5


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("name: x\nrole: wizard\n", ["agent 'x'", "'role'", "unknown role 'wizard'"]),
        ("name: x\n", ["agent 'x'", "give a role or instructions"]),
        ("name: Bad Name\nrole: coder\n", ["'name'", "slug"]),
        ("name: x\nrole: coder\nmodle: a:b\n", ["agent 'x'", "'modle'", "xtra"]),
        ("name: x\nrole: coder\nmodel: gpt4\n", ["'model'", "provider:model"]),
        ("name: x\nrole: coder\nmax_steps: 0\n", ["'max_steps'"]),
        ("name: x\nrole: coder\nmemory: {max_messages: 0}\n", ["'memory.max_messages'"]),
        ("name: x\nrole: coder\noutput: Essay\n", ["'output'", "unknown output type"]),
        ("- name: ok\n  role: coder\n- role: coder\n", ["agent #2", "'name'"]),
        ("- {name: a, role: coder}\n- {name: a, role: planner}\n", ["'a'", "defined twice"]),
        ("name: x\nrole: coder\nvariables: {nope: 1}\n", ["'variables", "nope"]),
        ("just a string\n", ["expected an agent mapping"]),
        ("name: [unclosed\n", ["invalid YAML", "line"]),
        ("", ["expected an agent mapping"]),
    ],
)
def test_invalid_files_name_file_agent_and_field(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(AgentDefinitionError) as caught:
        load_definitions(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    for needle in needles:
        assert needle in message, message
    assert caught.value.kind == "invalid_definition"


def test_invalid_json_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AgentDefinitionError, match="invalid JSON"):
        load_definitions(_write(tmp_path, "x.json", "{nope"))
    with pytest.raises(AgentDefinitionError, match="cannot read"):
        load_definitions(tmp_path / "missing.yaml")


def test_validation_error_carries_fields(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.yaml", "name: x\nrole: coder\ntemperature: 9\n")
    with pytest.raises(AgentDefinitionError) as caught:
        load_definitions(path)
    assert caught.value.path == str(path)
    assert caught.value.agent == "agent 'x'"
    assert caught.value.field == "temperature"


# ---- building -------------------------------------------------------------------------


def test_build_from_instructions_is_a_plain_text_agent() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    d = AgentDefinition(name="helper", instructions="Help {{ user }}.", model="test:m")
    agent = d.build(tools=[add])
    assert type(agent) is Agent
    assert agent.output_type is str and agent.model == "test:m"
    assert [t.name for t in agent.tools] == ["add"]
    assert agent.render_instructions({"user": "Ada"}) == "Help Ada."


def test_build_from_role_renders_the_role_template_per_run() -> None:
    d = AgentDefinition(name="rev", role="reviewer", variables={"context": "Renode peripherals"})
    agent = d.build()
    assert isinstance(agent, RoleAgent)
    assert agent.output_type is Review
    assert agent.temperature == 0.0  # the role's default
    text = agent.render_instructions({"task": "Add a FIFO", "code": "class Uart {}", "x": 1})
    assert "Add a FIFO" in text and "class Uart {}" in text and "Renode peripherals" in text
    with pytest.raises(InstructionsError, match="code"):
        agent.render_instructions({"task": "only the task"})


async def test_a_role_agent_run_starts_with_its_rendered_role_prompt() -> None:
    from arbor.core.config import Settings
    from arbor.llm.client import LLMClient
    from arbor.llm.types import ChatRequest
    from arbor.testing import FunctionModel

    seen: list[ChatRequest] = []

    def reply(request: ChatRequest) -> str:
        seen.append(request)
        return "plain answer"

    client = LLMClient(
        Settings(llm={"cache": {"enabled": False}}), models={"test:a": FunctionModel(reply)}
    )
    d = AgentDefinition(name="w", role="technical_writer", model="test:a", output="text")
    agent = d.build()
    assert agent.has_instructions and agent.instructions == ""
    deps = {"requirements": "Document the UART", "code": "class Uart {}"}
    await agent.run("go", client=client, deps=deps)
    system = [m for m in seen[0].messages if m.role == "system"]
    assert len(system) == 1
    assert system[0].content == agent.render_instructions(deps)
    assert "Document the UART" in str(system[0].content)


def test_build_overrides_output_and_temperature() -> None:
    d = AgentDefinition(name="r", role="reviewer", output="text", temperature=0.7, max_steps=3)
    agent = d.build()
    assert agent.output_type is str and agent.temperature == 0.7 and agent.max_steps == 3
    explicit = AgentDefinition(name="r2", role="planner", instructions="Plan {{ task }}.")
    built = explicit.build()
    assert type(built) is Agent and built.output_type.__name__ == "Plan"


@tool
def search(query: str) -> str:
    """Search the web."""
    return query


@tool
def fetch_page(url: str) -> str:
    """Fetch a page."""
    return url


def test_tools_are_resolved_by_name_against_the_given_tools(tmp_path: Path) -> None:
    d = AgentDefinition.parse({"name": "web", "instructions": "Browse.", "tools": ["search"]})
    toolbox = {"search": search, "fetch_page": fetch_page}
    assert [t.name for t in d.build(toolbox).tools] == ["search"]
    assert [t.name for t in d.build([fetch_page, search]).tools] == ["search"]
    with pytest.raises(AgentDefinitionError, match=r"unknown tool\(s\) 'search'") as caught:
        d.build({"fetch_page": fetch_page})
    assert caught.value.field == "tools" and caught.value.agent == "web"
    with pytest.raises(AgentDefinitionError, match="none were given"):
        d.build()
    assert AgentDefinition.parse({"name": "plain", "instructions": "x"}).build(toolbox).tools == ()
    assert d.to_document()["tools"] == ["search"]
    assert AgentDefinition.parse({**d.to_document(), "name": "web"}) == d

    path = _write(
        tmp_path,
        "agents.yaml",
        "agents:\n  - {name: a, instructions: x, tools: [search]}\n"
        "  - {name: b, instructions: y, tools: [search, fetch]}\n",
    )
    assert len(load_definitions(path)) == 2  # no toolbox given: names are checked later
    bad = r"agents\.yaml: agent 'b': unknown tool\(s\) 'fetch'"
    with pytest.raises(AgentDefinitionError, match=bad):
        load_definitions(path, tools=toolbox)
    with pytest.raises(AgentDefinitionError, match="listed twice"):
        AgentDefinition.parse({"name": "c", "instructions": "x", "tools": ["search", "search"]})


async def test_supervisor_builds_stored_agents_with_their_tools(db: Database) -> None:
    repo = AgentRepository(db)
    await repo.create("web", {"instructions": "Browse.", "tools": ["fetch_page"]})
    agent = await Supervisor(repo).build_agent("web", {"fetch_page": fetch_page})
    assert agent.name == "web" and [t.name for t in agent.tools] == ["fetch_page"]


def test_document_round_trip() -> None:
    d = AgentDefinition(name="rt", role="coder", memory=MemoryPolicy(max_messages=5))
    doc = d.to_document()
    assert json.loads(json.dumps(doc)) == doc
    assert AgentDefinition.model_validate(doc) == d


# ---- supervision ----------------------------------------------------------------------


async def _seed(db: Database, name: str = "flappy") -> AgentRepository:
    repo = AgentRepository(db)
    await repo.create(name, AgentDefinition(name=name, role="coder").to_document())
    return repo


async def test_supervisor_trips_after_threshold_within_window(db: Database) -> None:
    repo = await _seed(db)
    sup = Supervisor(repo, threshold=3, window=timedelta(minutes=5))
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert (await sup.check_enabled("flappy")).status == "enabled"
    first = await sup.record_failure("flappy", now=t0)
    second = await sup.record_failure("flappy", now=t0 + timedelta(minutes=1))
    assert first.status == second.status == "enabled"
    third = await sup.record_failure("flappy", now=t0 + timedelta(minutes=2))
    assert third.status == "disabled_flapping"
    with pytest.raises(AgentDisabledError) as caught:
        await sup.check_enabled("flappy")
    assert caught.value.kind == "agent_disabled"
    assert caught.value.status == "disabled_flapping"
    assert "arbor agents enable flappy" in str(caught.value)


async def test_supervisor_does_not_trip_when_failures_are_spread(db: Database) -> None:
    repo = await _seed(db)
    sup = Supervisor(repo, threshold=3, window=timedelta(minutes=5))
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    for i in range(6):
        record = await sup.record_failure("flappy", now=t0 + timedelta(minutes=4 * i))
        assert record.status == "enabled"
    await sup.check_enabled("flappy")


async def test_reenable_clears_flapping(db: Database) -> None:
    repo = await _seed(db)
    sup = Supervisor(repo, threshold=2, window=timedelta(minutes=5))
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    await sup.record_failure("flappy", now=t0)
    assert (await sup.record_failure("flappy", now=t0)).status == "disabled_flapping"
    enabled = await sup.enable("flappy")
    assert enabled.status == "enabled" and enabled.failures == ()
    # history starts afresh: one more failure does not trip it again
    assert (await sup.record_failure("flappy", now=t0)).status == "enabled"
    await sup.disable("flappy")
    with pytest.raises(AgentDisabledError, match="is disabled"):
        await sup.check_enabled("flappy")


async def test_supervisor_unknown_agent(db: Database) -> None:
    sup = Supervisor(AgentRepository(db))
    with pytest.raises(NotFoundError):
        await sup.record_failure("ghost")
    with pytest.raises(NotFoundError):
        await sup.check_enabled("ghost")


async def test_supervisor_rejects_bad_settings(db: Database) -> None:
    with pytest.raises(ValueError, match="threshold"):
        Supervisor(AgentRepository(db), threshold=0)
