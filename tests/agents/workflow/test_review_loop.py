from __future__ import annotations

import json

from arbor.agents.workflow import InMemoryCheckpointStore, WorkflowRunner
from arbor.agents.workflow.registry import WorkflowRegistry
from arbor.core.config import Settings
from arbor.llm.client import LLMClient
from arbor.testing import ScriptedModel

REVISE = json.dumps(
    {
        "verdict": "revise",
        "issues": [
            {
                "severity": "major",
                "location": "add()",
                "problem": "Returns a - b; {{ not a template }}",
                "suggestion": "Return a + b.",
            }
        ],
        "summary": "Wrong operator.",
    }
)
APPROVE = json.dumps({"verdict": "approve", "issues": [], "summary": "Correct and clear."})


async def test_review_loop_revises_until_approved() -> None:
    model = ScriptedModel(
        ["def add(a, b): return a - b", REVISE, "def add(a, b): return a + b", APPROVE]
    )
    client = LLMClient(Settings(llm={"cache": {"enabled": False}}), models={"test:a": model})
    runner = WorkflowRunner(
        WorkflowRegistry().get("review-loop", "test:a"), InMemoryCheckpointStore(), client=client
    )
    result = await runner.start({"task": "Write add(a, b) in Python."})
    await client.aclose()
    assert result.status == "succeeded", result.error
    assert result.state.verdict == "approve" and result.state.iterations == 2
    assert result.state.draft == "def add(a, b): return a + b"
    third_call = model.calls[2].messages[-1].content or ""
    assert "Return a + b." in third_call  # the reviewer's issue reached the writer
    assert all(c.context.run_id == result.run_id for c in model.calls)


async def test_review_loop_stops_at_the_iteration_cap() -> None:
    model = ScriptedModel(["v1", REVISE, "v2", REVISE])
    client = LLMClient(Settings(llm={"cache": {"enabled": False}}), models={"test:a": model})
    runner = WorkflowRunner(
        WorkflowRegistry().get("review-loop", "test:a"), InMemoryCheckpointStore(), client=client
    )
    result = await runner.start({"task": "t", "max_iterations": 2})
    await client.aclose()
    assert result.status == "succeeded"
    assert (result.state.verdict, result.state.iterations, result.state.draft) == (
        "revise",
        2,
        "v2",
    )
