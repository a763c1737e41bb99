"""``arbor renode generate --model M``: the agentic workflow with a live view of its agents.

Nodes show as they start and finish (the same view as ``arbor run``); each pass through the
validator gate prints its verdict and scores, and each model call its agent and tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from arbor.agents.plugins import HookContext, Plugin
from arbor.cli._common import EXIT_ERROR, EXIT_USAGE, fail
from arbor.cli.run import NodeView
from arbor.core.config import Settings
from arbor.llm.types import ChatRequest, ChatResponse

if TYPE_CHECKING:
    from arbor.agents.workflow.context import NodeContext
    from arbor.agents.workflow.runner import RunResult

__all__ = ["run_agentic"]


class _GateView(Plugin):
    """Prints each gate verdict (iteration, accepted or why not, scores) and model call."""

    def __init__(self, console: Console) -> None:
        self.console = console

    async def after_node(
        self, ctx: NodeContext, state: BaseModel, delta: dict[str, Any]
    ) -> dict[str, Any]:
        if ctx.node in ("skeleton", "validate") and delta.get("iterations"):
            a = delta["iterations"][-1]
            a = a if isinstance(a, dict) else a.model_dump()
            verdict = "[green]accepted[/]" if a["accepted"] else "[red]rejected[/]"
            self.console.print(
                f"iteration {a['iteration']}: {verdict} ({a['reason']}) accuracy "
                f"{a['accuracy']:.3f} confidence {a['confidence']:.3f} syntax "
                f"{a['syntax_errors']} compile {a['compile_errors']}",
                highlight=False,
            )
        return delta

    async def after_llm_call(
        self, ctx: HookContext, request: ChatRequest, response: ChatResponse
    ) -> ChatResponse:
        tokens = response.usage.input_tokens + response.usage.output_tokens
        who = ctx.agent or ctx.node
        self.console.print(f"  {who} asked {request.model} ({tokens} tokens)", highlight=False)
        return response


async def _drive(
    settings: Settings, model: str, state: dict[str, Any], console: Console, max_iterations: int
) -> RunResult[Any]:
    from arbor.agents.workflow import InMemoryCheckpointStore, WorkflowRunner
    from arbor.apps.renode.workflow import renode_workflow
    from arbor.llm.setup import open_client

    view = NodeView(live=console.is_terminal)
    workflow = renode_workflow(model, max_iterations=max_iterations)
    async with open_client(settings) as client:
        runner = WorkflowRunner(
            workflow, InMemoryCheckpointStore(), client=client, plugins=[view, _GateView(console)]
        )
        with view.showing(console):
            result = await runner.start(state)
            view.finish(result.status)
    return result


def run_agentic(
    settings: Settings, model: str, state: dict[str, Any], out: Path, console: Console
) -> None:
    """Run the workflow, write the outputs and print the iterations; exit 2 on bad input
    (empty description, unknown device or peripheral), 1 when the run fails otherwise."""
    import asyncio

    from arbor.apps.renode.compile import find_mcs
    from arbor.apps.renode.regmap import RenodeError
    from arbor.apps.renode.workflow import RenodeState, write_outputs

    if find_mcs() is None:
        fail("mcs not found: install Debian's mono-mcs to compile models", EXIT_ERROR)
    result = asyncio.run(_drive(settings, model, state, console, state["max_iterations"]))
    if result.status != "succeeded":
        error = result.error or result.status
        if error.startswith("renode: "):
            fail(error.removeprefix("renode: "), EXIT_USAGE)
        fail(f"the run failed: {error}", EXIT_ERROR)
    final: RenodeState = result.state
    try:
        files = write_outputs(final, out)
    except RenodeError as exc:
        fail(str(exc), EXIT_USAGE)
    table = Table("iteration", "accepted", "reason", "accuracy", "confidence", title="gate")
    for a in final.iterations:
        table.add_row(
            str(a.iteration),
            "yes" if a.accepted else "no",
            a.reason,
            f"{a.accuracy:.3f}",
            f"{a.confidence:.3f}",
        )
    console.print(table)
    for kind, name in files.items():
        console.print(f"{kind}: {out / name}")
    score = final.report["final"]
    if not (score["syntax"]["passed"] and score["compile"]["passed"]):
        fail("the best model does not build (see above)", EXIT_ERROR)
