"""The whole team on the embedded SmolLM2-135M (CPU) with one iteration and short replies. A
model this small rarely writes a project whose tests pass; what must hold is that the run
ends cleanly with an honest report (iterations, test results or why there are none, tokens)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from arbor.agents.workflow import InMemoryCheckpointStore, WorkflowRunner
from arbor.apps.team.workflow import TeamConfig, build_team_workflow
from arbor.core.config import Settings
from arbor.llm.client import LLMClient


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.usefixtures("isolation")
async def test_smollm2_team_run_ends_with_an_honest_report(tmp_path: Path) -> None:
    wf = build_team_workflow(
        TeamConfig(model="local:smollm2", workspaces=tmp_path / "ws", published=tmp_path / "pub")
    )
    state = {
        "prompt": "A function add(a, b) that returns a + b.",
        "max_iterations": 1,
        "max_tokens": 192,
    }
    started = time.perf_counter()
    async with LLMClient(Settings(llm={"cache": {"enabled": False}})) as client:
        result = await WorkflowRunner(wf, InMemoryCheckpointStore(), client=client).start(state)
    elapsed = time.perf_counter() - started
    assert result.status == "succeeded", result.error
    report = result.state.report
    assert report is not None
    assert report.iteration_count == 1
    it = report.iterations[0]
    assert it.ok == report.ok
    assert it.ok or it.failed or it.problem  # never a silent "no result"
    assert report.input_tokens > 0 and report.output_tokens > 0
    assert {u.role for u in report.usage} >= {"analyst", "developer", "qa", "devops", "writer"}
    assert report.workspace == str(tmp_path / "ws" / result.run_id)
    print(
        f"smollm2 team: {elapsed:.0f}s, ok={report.ok}, files={report.files}, "
        f"iteration={it.model_dump()}, notes={report.notes}"
    )
    assert elapsed < 300, f"took {elapsed:.0f}s"
