"""Durable runs on a real database: SIGKILL a child process mid-run, resume it, and check
that every node's LLM call reached the upstream exactly once and the final state equals an
uninterrupted run's. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from arbor.agents.workflow import END, NodeContext, Workflow, WorkflowRunner
from arbor.agents.workflow.sql import SQLCheckpointStore
from arbor.store import Database, RunRepository, migrate
from arbor.testing.mock_upstream import MockUpstream

CHILD = Path(__file__).with_name("crash_child.py")


@pytest.fixture
async def mock() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as server:
        yield server


async def _child(db_url: str, mock_url: str, *args: str) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        db_url,
        mock_url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    lines = out.decode().splitlines()
    assert proc.returncode in (0, -signal.SIGKILL), err.decode()
    return proc.returncode or 0, lines


@pytest.mark.slow
@pytest.mark.parametrize(
    "kills",
    [
        ["code:after_call"],
        ["review:before"],
        ["plan:after_call", "check:before", "report:after_call"],
    ],
)
async def test_sigkill_and_resume_repeats_no_llm_call(
    db_url: str, mock: MockUpstream, kills: list[str]
) -> None:
    code, lines = await _child(db_url, mock.url, "--new")
    assert code == 0
    reference = json.loads(lines[-1])
    assert reference["status"] == "succeeded"
    assert mock.stats.requests == 5
    mock.reset()

    code, lines = await _child(db_url, mock.url, "--new", "--kill", kills[0])
    assert code == -signal.SIGKILL
    run_id = lines[0]
    for kill in kills[1:]:
        code, _ = await _child(db_url, mock.url, "--resume", run_id, "--kill", kill)
        assert code == -signal.SIGKILL
    code, lines = await _child(db_url, mock.url, "--resume", run_id)
    assert code == 0
    final = json.loads(lines[-1])
    assert final == reference
    assert mock.stats.requests == 5  # every node's call happened exactly once

    async with Database(db_url) as db:
        runs = RunRepository(db)
        assert (await runs.get(run_id)).status == "succeeded"
        assert len(await runs.checkpoints(run_id)) == 5  # one per node, none repeated


class Gate(BaseModel):
    approved: bool | None = None
    approval_reason: str = ""
    result: str = ""


async def test_approval_through_the_database(db_url: str) -> None:
    wf = Workflow("gate", Gate)

    async def act(state: Gate, ctx: NodeContext) -> dict[str, Any]:
        return {"result": "done" if state.approved else "refused"}

    wf.add_approval("ask", prompt="Proceed?")
    wf.add_node("act", act)
    wf.edge("ask", "act")
    wf.edge("act", END)
    async with Database(db_url) as db:
        await migrate(db)
        store = SQLCheckpointStore(db)
        runner = WorkflowRunner(wf, store)
        first = await runner.start({})
        assert first.status == "waiting_approval"
        assert (await store.runs.get(first.run_id)).status == "waiting_approval"
        await store.decide_approval(first.run_id, "ask", False, "not today", by="bob")
        final = await WorkflowRunner(wf, SQLCheckpointStore(db)).resume(first.run_id)
        assert final.status == "succeeded"
        assert (final.state.result, final.state.approval_reason) == ("refused", "not today")
        types = [e.type for e in await store.events(first.run_id)]
        assert "approval_requested" in types and types[-1] == "run_finished"


async def test_two_processes_cannot_checkpoint_the_same_run(db_url: str) -> None:
    from arbor.core.errors import WorkflowError

    async with Database(db_url) as db:
        await migrate(db)
        a, b = SQLCheckpointStore(db), SQLCheckpointStore(db)
        run_id = await a.create_run("w", {})
        await a.load(run_id)
        await b.load(run_id)
        await a.checkpoint(run_id, "n1", {"x": 1}, [])
        with pytest.raises(WorkflowError, match="another process"):
            await b.checkpoint(run_id, "n1", {"x": 2}, [])
