"""``arbor run`` and ``arbor runs ...``: real processes against the mock upstream, plus an
in-process approval round trip on a tiny workflow of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from arbor.agents.workflow import NodeContext
from arbor.agents.workflow.graph import END, Workflow
from arbor.agents.workflow.registry import WorkflowRegistry
from arbor.cli.main import app
from arbor.testing.mock_upstream import spawn_mock_upstream

REVIEW_INPUT = '{"task": "write add", "max_iterations": 1}'


def _arbor(*args: str, home: Path, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARBOR_HOME": str(home)}
    if url is not None:
        env["ARBOR_PROVIDERS__MOCK__BASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "arbor.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=home,
    )


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_review_loop_on_the_mock_fails_cleanly_and_is_inspectable(tmp_path: Path) -> None:
    # The mock answers plain text, so the reviewer's structured output never validates.
    with spawn_mock_upstream() as url:
        proc = _arbor(
            "run",
            "review-loop",
            "--input",
            REVIEW_INPUT,
            "-m",
            "mock:mock-1",
            home=tmp_path,
            url=url,
        )
        resumed = _arbor("run", "--resume", _last_line(proc.stdout), home=tmp_path, url=url)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    run_id = _last_line(proc.stdout)
    assert run_id.startswith("run_") and " " not in run_id
    lines = proc.stdout.splitlines()
    assert "node write started" in lines and "node write finished" in lines
    assert "node review failed" in lines
    assert "error: output_invalid: agent 'reviewer'" in proc.stdout

    # --resume of a finished run reports it and prints its id last; nothing is re-run.
    assert resumed.returncode == 1, resumed.stderr
    assert _last_line(resumed.stdout) == run_id
    assert "failed" in resumed.stdout and "node write started" not in resumed.stdout

    runs = _json(_arbor("runs", "list", "--json", home=tmp_path))
    assert [r["id"] for r in runs] == [run_id]
    assert runs[0]["status"] == "failed" and runs[0]["created_at"]
    assert _json(_arbor("runs", "list", "--status", "succeeded", "--json", home=tmp_path)) == []
    filtered = _arbor("runs", "list", "--workflow", "review-loop", "--json", home=tmp_path)
    assert [r["id"] for r in _json(filtered)] == [run_id]

    shown = _json(_arbor("runs", "show", run_id, "--json", home=tmp_path))
    assert shown["id"] == run_id and shown["status"] == "failed" and shown["created_at"]
    assert shown["workflow"] == "review-loop"
    assert shown["input"]["task"] == "write add" and "output_invalid" in shown["error"]

    events = _json(_arbor("runs", "events", run_id, "--json", home=tmp_path))
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    types = [e["type"] for e in events]
    assert types[-1] == "run_failed" and "run_started" in types
    assert ("node_finished", "write") in [(e["type"], e["node"]) for e in events]
    later = _json(_arbor("runs", "events", run_id, "--after", "2", "--json", home=tmp_path))
    assert [e["seq"] for e in later] == seqs[2:]

    human = _arbor("runs", "show", run_id, home=tmp_path)
    assert human.returncode == 0 and run_id in human.stdout and "failed" in human.stdout
    table = _arbor("runs", "list", home=tmp_path)
    assert table.returncode == 0 and run_id in table.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["review-loop", "--input", "{bad"], "not valid JSON"),
        (["review-loop", "--input", "@missing.json"], "does not exist"),
        (["review-loop", "--input", "@bad.json"], "not valid JSON"),
        (["review-loop", "--input", "[1, 2]"], "must be a JSON object"),
        (["review-loop", "--input", '{"task": ""}'], "task"),
        (["review-loop", "--input", '{"max_iterations": 2}'], "task: Field required"),
        (["review-loop", "--input", '{"task": "x", "max_iterations": 99}'], "max_iterations"),
        (["review-loop", "--input", '{"task": "x"}', "--model", "gpt"], "provider:model"),
        (["nope", "--input", '{"task": "x"}'], "known: renode, review-loop, team"),
        ([], "WORKFLOW"),
        (["--resume", "run_nope"], "run 'run_nope' not found"),
    ],
)
def test_run_bad_usage_exits_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    proc = _arbor("run", *args, home=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["show", "run_nope"],
        ["show", "run_nope", "--json"],
        ["events", "run_nope"],
        ["approve", "run_nope"],
        ["reject", "run_nope", "--reason", "no"],
        ["list", "--status", "bogus"],
    ],
)
def test_runs_unknown_run_or_bad_option_exits_2(tmp_path: Path, args: list[str]) -> None:
    proc = _arbor("runs", *args, home=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


# --- approvals, in process: a tiny workflow with an approval node, no LLM ------------------


class GateState(BaseModel):
    text: str
    approved: bool = False
    approval_reason: str = ""
    result: str = ""


def _gate() -> Workflow[GateState]:
    wf = Workflow("gate", GateState)

    async def draft(state: GateState, ctx: NodeContext) -> dict[str, Any]:
        return {"text": state.text.upper()}

    async def publish(state: GateState, ctx: NodeContext) -> dict[str, Any]:
        return {"result": f"{'published' if state.approved else 'dropped'} {state.text}"}

    wf.add_node("draft", draft)
    wf.add_approval("review", prompt="Publish it?")
    wf.add_node("publish", publish)
    wf.edge("draft", "review")
    wf.edge("review", "publish")
    wf.edge("publish", END)
    return wf


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    import arbor.cli.run as run_command

    registry = WorkflowRegistry({"gate": lambda model: _gate()})
    monkeypatch.setattr(run_command, "workflow_registry", lambda: registry)
    monkeypatch.setenv("ARBOR_HOME", str(tmp_path))
    return CliRunner()


@pytest.mark.parametrize(("verb", "expected"), [("approve", True), ("reject", False)])
def test_approval_pauses_then_decision_resumes_to_success(
    cli: CliRunner, verb: str, expected: bool
) -> None:
    started = cli.invoke(app, ["run", "gate", "--input", '{"text": "hello"}'])
    assert started.exit_code == 0, started.output
    run_id = _last_line(started.stdout)
    assert "waiting for approval at node review" in started.stdout
    assert f"arbor runs approve {run_id}" in started.stdout
    assert "node draft finished" in started.stdout

    pending = json.loads(cli.invoke(app, ["runs", "show", run_id, "--json"]).stdout)
    assert pending["status"] == "waiting_approval" and pending["current_node"] == "review"
    assert [a["status"] for a in pending["approvals"]] == ["pending"]

    decided = cli.invoke(app, ["runs", verb, run_id, "--reason", "looks right"])
    assert decided.exit_code == 0, decided.output
    assert _last_line(decided.stdout) == run_id
    assert "succeeded" in decided.stdout and "node publish finished" in decided.stdout

    done = json.loads(cli.invoke(app, ["runs", "show", run_id, "--json"]).stdout)
    assert done["status"] == "succeeded"
    assert done["output"]["approved"] is expected
    assert done["output"]["approval_reason"] == "looks right"
    word = "published" if expected else "dropped"
    assert done["output"]["result"] == f"{word} HELLO"
    assert done["approvals"][0]["status"] == ("approved" if expected else "rejected")

    again = cli.invoke(app, ["runs", verb, run_id])
    assert again.exit_code == 2 and "no pending approval" in again.output


def test_run_input_from_file_and_list_is_newest_first(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text('{"text": "from file"}', encoding="utf-8")
    first = _last_line(cli.invoke(app, ["run", "gate", "-i", f"@{tmp_path / 'in.json'}"]).stdout)
    second = _last_line(cli.invoke(app, ["run", "gate", "--input", '{"text": "b"}']).stdout)
    runs = json.loads(cli.invoke(app, ["runs", "list", "--json"]).stdout)
    assert [r["id"] for r in runs] == [second, first]
    assert all(r["status"] == "waiting_approval" for r in runs)
    limited = json.loads(cli.invoke(app, ["runs", "list", "--limit", "1", "--json"]).stdout)
    assert [r["id"] for r in limited] == [second]
    shown = json.loads(cli.invoke(app, ["runs", "show", first, "--json"]).stdout)
    assert shown["input"]["text"] == "from file"
