"""Shared pieces of the agentic Renode tests: scripted replies and edits of the skeleton."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from arbor.agents.workflow import InMemoryCheckpointStore, RunResult, WorkflowRunner
from arbor.apps.renode.emitter import emit_model
from arbor.apps.renode.svd import load_device
from arbor.apps.renode.workflow import renode_workflow
from arbor.core.config import Settings
from arbor.llm.client import LLMClient
from arbor.testing.models import ScriptedModel, Step

PLAN = json.dumps(
    {
        "side_effects": [{"target": "STATUS", "effect": "DONE clears on read"}],
        "interrupts": [{"name": "IRQ", "driven_by": "STATUS.IRQ"}],
        "notes": "",
    }
)
APPROVE = json.dumps({"verdict": "approve", "issues": [], "summary": "Behaviour is right."})
REVISE = json.dumps(
    {
        "verdict": "revise",
        "issues": [
            {
                "severity": "major",
                "location": "STATUS",
                "problem": "IRQ never raised.",
                "suggestion": "Call UpdateInterrupts when STATUS changes.",
            }
        ],
        "summary": "Needs interrupt wiring.",
    }
)
UPDATE = """        private void UpdateInterrupts()
        {
            IRQ.Set(false);
        }

"""


def skeleton(svd: Path, peripheral: str) -> str:
    return emit_model(load_device(svd).peripheral(peripheral)).source


def with_behaviour(source: str) -> str:
    """The skeleton plus an UpdateInterrupts method (still builds, same registers)."""
    return source.replace(
        "        private void DefineRegisters()", UPDATE + "        private void DefineRegisters()"
    )


def fenced(source: str) -> str:
    return f"Here is the model:\n```csharp\n{source}```\n"


async def run_renode(
    steps: list[Step], state: dict[str, Any]
) -> tuple[RunResult[Any], ScriptedModel]:
    model = ScriptedModel(list(steps))
    async with LLMClient(
        Settings(llm={"cache": {"enabled": False}}), models={"test:r": model}
    ) as client:
        runner = WorkflowRunner(renode_workflow("test:r"), InMemoryCheckpointStore(), client=client)
        result = await runner.start(state)
    return result, model
