"""``arbor agents ...`` as a user runs it: real processes on a SQLite file under ARBOR_HOME."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from arbor.store import AgentRepository, Database

AGENTS_YAML = """\
agents:
  - name: strict-reviewer
    role: reviewer
    model: openai:gpt-4o-mini
    description: Reviews without mercy.
    memory: {max_messages: 20}
  - name: helper
    instructions: Help {{ user }}.
"""


def _arbor(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARBOR_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "arbor.cli", "agents", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home,
    )


def _ok(*args: str, home: Path) -> str:
    proc = _arbor(*args, home=home)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _usage_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "agents.yaml").write_text(AGENTS_YAML, encoding="utf-8")
    return tmp_path


def test_create_from_yaml_list_and_show(home: Path) -> None:
    out = _ok("create", "--file", str(home / "agents.yaml"), home=home)
    assert "created agent strict-reviewer" in out and "created agent helper" in out

    listed = json.loads(_ok("list", "--json", home=home))
    assert [a["name"] for a in listed] == ["helper", "strict-reviewer"]  # newest first
    for item in listed:
        assert {"id", "status", "created_at"} <= set(item)
        assert item["status"] == "enabled" and item["id"].startswith("agt_")
    assert listed[0]["created_at"] >= listed[1]["created_at"]

    table = _ok("list", home=home)
    assert "strict-reviewer" in table and "reviewer" in table and "openai:gpt-4o-mini" in table

    shown = json.loads(_ok("show", "strict-reviewer", "--json", home=home))
    assert shown["id"] == listed[1]["id"] and shown["status"] == "enabled"
    assert shown["definition"]["role"] == "reviewer"
    assert shown["definition"]["memory"]["max_messages"] == 20
    assert shown["failures"] == []
    by_id = json.loads(_ok("show", shown["id"], "--json", home=home))
    assert by_id["name"] == "strict-reviewer"
    assert "Reviews without mercy." in _ok("show", "strict-reviewer", home=home)


def test_create_from_options_and_replace(home: Path) -> None:
    out = _ok("create", "--name", "planner-1", "--role", "planner", "-m", "local:x", home=home)
    assert "created agent planner-1" in out
    _usage_error(
        _arbor("create", "--name", "planner-1", "--role", "coder", home=home), "already exist"
    )
    out = _ok("create", "--name", "planner-1", "--role", "coder", "--replace", home=home)
    assert "replaced agent planner-1" in out
    shown = json.loads(_ok("show", "planner-1", "--json", home=home))
    assert shown["definition"]["role"] == "coder" and "model" not in shown["definition"]
    _ok("create", "--name", "free", "--instructions", "Be brief.", home=home)
    names = {a["name"] for a in json.loads(_ok("list", "--json", home=home))}
    assert names == {"planner-1", "free"}


def test_existing_name_in_file_creates_nothing_without_replace(home: Path) -> None:
    _ok("create", "--name", "helper", "--instructions", "old", home=home)
    _usage_error(_arbor("create", "-f", str(home / "agents.yaml"), home=home), "helper")
    assert [a["name"] for a in json.loads(_ok("list", "--json", home=home))] == ["helper"]
    _ok("create", "-f", str(home / "agents.yaml"), "--replace", home=home)
    shown = json.loads(_ok("show", "helper", "--json", home=home))
    assert shown["definition"]["instructions"] == "Help {{ user }}."


def test_disable_enable_and_status_filter(home: Path) -> None:
    _ok("create", "--file", str(home / "agents.yaml"), home=home)
    assert "disabled agent helper" in _ok("disable", "helper", home=home)
    disabled = json.loads(_ok("list", "--status", "disabled", "--json", home=home))
    assert [a["name"] for a in disabled] == ["helper"]
    enabled = json.loads(_ok("list", "--status", "enabled", "--json", home=home))
    assert [a["name"] for a in enabled] == ["strict-reviewer"]
    assert "enabled agent helper" in _ok("enable", "helper", home=home)
    assert json.loads(_ok("show", "helper", "--json", home=home))["status"] == "enabled"


async def _flap(db_file: Path, name: str) -> None:
    db = Database(f"sqlite+aiosqlite:///{db_file}")
    try:
        repo = AgentRepository(db)
        record = await repo.get_by_name(name)
        for _ in range(3):
            record = await repo.record_failure(record.id, threshold=3, window=timedelta(minutes=5))
        assert record.status == "disabled_flapping"
    finally:
        await db.dispose()


def test_flapping_is_shown_and_reenabled_by_enable(home: Path) -> None:
    _ok("create", "--file", str(home / "agents.yaml"), home=home)
    asyncio.run(_flap(home / "arbor.db", "strict-reviewer"))

    flapping = json.loads(_ok("list", "--status", "disabled_flapping", "--json", home=home))
    assert [a["name"] for a in flapping] == ["strict-reviewer"]
    shown = json.loads(_ok("show", "strict-reviewer", "--json", home=home))
    assert shown["status"] == "disabled_flapping" and len(shown["failures"]) == 3
    assert "disabled_flapping" in _ok("list", home=home)

    assert "enabled agent strict-reviewer" in _ok("enable", "strict-reviewer", home=home)
    shown = json.loads(_ok("show", "strict-reviewer", "--json", home=home))
    assert shown["status"] == "enabled" and shown["failures"] == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["show", "ghost"], "agent 'ghost' not found"),
        (["enable", "ghost"], "agent 'ghost' not found"),
        (["disable", "agt_nope"], "agent 'agt_nope' not found"),
        (["list", "--status", "sleepy"], "--status must be one of"),
        (["create"], "--file"),
        (["create", "--name", "x"], "give a role or instructions"),
        (["create", "--name", "x", "--role", "wizard"], "unknown role 'wizard'"),
        (["create", "--name", "Bad Name", "--role", "coder"], "'name'"),
        (["create", "--file", "missing.yaml"], "missing.yaml: cannot read"),
        (["create", "--file", "agents.yaml", "--name", "x"], "either --file"),
    ],
)
def test_bad_input_is_one_line_exit_2(home: Path, args: list[str], needle: str) -> None:
    _usage_error(_arbor(*args, home=home), needle)


def test_invalid_file_names_file_agent_and_field(home: Path) -> None:
    bad = home / "bad.yaml"
    bad.write_text("- name: good\n  role: coder\n- name: worse\n  role: coder\n  max_steps: -1\n")
    proc = _arbor("create", "--file", str(bad), home=home)
    _usage_error(proc, str(bad))
    assert "agent 'worse'" in proc.stderr and "'max_steps'" in proc.stderr
    assert json.loads(_ok("list", "--json", home=home)) == []
