"""``arbor team "PROMPT"``: a software team builds a small Python project in a workspace.

The analyst, developer, QA and DevOps engineers and the technical writer run as the durable
``team`` workflow (see :mod:`arbor.apps.team.workflow`) with a live view of which role works,
the iteration and the test results; it ends with the report and the workspace's path.
``arbor runs workspace RUN_ID --out FILE.zip`` downloads a run's workspace as a zip.

Exit 0 when the generated project's tests pass, 1 when they still fail after the last
iteration (or the run failed), 2 for bad usage (empty prompt, bad ``--model``, a ``--out``
that is not a usable directory).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from arbor.cli._common import (
    EXIT_ERROR,
    EXIT_USAGE,
    ClientFactory,
    default_client,
    exit_code_for,
    fail,
    settings_or_exit,
)
from arbor.cli.run import OPTIONS_EVENT, NodeView
from arbor.core.config import Settings
from arbor.core.errors import ArborError, NotFoundError

if TYPE_CHECKING:
    from arbor.agents.workflow.context import NodeContext

__all__ = ["ROLE_OF_NODE", "TeamView", "team", "workspace"]

_out = Console(highlight=False, soft_wrap=True)

#: Which role works in each node of the team workflow.
ROLE_OF_NODE = {
    "analyst": "analyst",
    "developer": "developer",
    "fix": "developer (fixing)",
    "qa": "QA engineer",
    "devops": "DevOps engineer",
    "test": "QA engineer (running tests)",
    "writer": "technical writer",
    "report": "report",
    "approve_publish": "approval",
    "publish": "publish",
}

#: Tests replace it to serve scripted models.
open_team_client: ClientFactory = default_client


def team(
    prompt: Annotated[str, typer.Argument(help="What to build, e.g. 'a word counter'.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model id provider:model.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Workspace directory (default ARBOR_HOME/workspaces/RUN_ID)."),
    ] = None,
    max_iterations: Annotated[
        int, typer.Option("--max-iterations", help="Developer attempts at passing the tests.")
    ] = 3,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", help="Cap on each role's reply (small local models ramble)."),
    ] = None,
    allow_unisolated: Annotated[
        bool,
        typer.Option(
            "--allow-unisolated",
            help="Run the tests without OS isolation when it is unavailable (reported).",
        ),
    ] = False,
) -> None:
    """Have a software team (analyst, developer, QA, DevOps, writer) build a small project."""
    from arbor.apps.team.state import MAX_ITERATIONS

    if not prompt.strip():
        fail("PROMPT is empty: say what to build", EXIT_USAGE)
    if len(prompt) > 8000:
        fail(f"PROMPT is {len(prompt)} characters; the limit is 8000", EXIT_USAGE)
    if model is not None and ":" not in model:
        fail(f"--model must look like provider:model, got {model!r}", EXIT_USAGE)
    if not 1 <= max_iterations <= MAX_ITERATIONS:
        fail(f"--max-iterations must be between 1 and {MAX_ITERATIONS}", EXIT_USAGE)
    if max_tokens is not None and not 16 <= max_tokens <= 32_768:
        fail("--max-tokens must be between 16 and 32768", EXIT_USAGE)
    if out is not None:
        _check_out(out)
        out = out.resolve()
    settings = settings_or_exit()
    try:
        options = {"prompt": prompt, "max_iterations": max_iterations, "max_tokens": max_tokens}
        code = asyncio.run(_execute(settings, options, model, out, allow_unisolated))
    except ArborError as exc:
        fail(str(exc), exit_code_for(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        fail(f"--out {str(out)!r} exists and is not a directory", EXIT_USAGE)
    if out.is_symlink():
        fail(f"--out {str(out)!r} is a symlink; give the directory itself", EXIT_USAGE)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create --out {str(out)!r}: {exc.strerror or exc}", EXIT_USAGE)


async def _execute(
    settings: Settings,
    options: dict[str, Any],
    model: str | None,
    out: Path | None,
    allow_unisolated: bool,
) -> int:
    """Run the team; ``options`` are the workflow's input (prompt, iteration and token caps)."""
    from arbor.agents.workflow.checkpoints import RunEvent
    from arbor.agents.workflow.runner import WorkflowRunner
    from arbor.agents.workflow.sql import SQLCheckpointStore
    from arbor.apps.team.workflow import TeamConfig, build_team_workflow
    from arbor.runtime.sandbox import SandboxConfig
    from arbor.store import Database, migrate

    config = TeamConfig(
        model=model,
        workspaces=settings.home / "workspaces",
        out=out,
        published=settings.home / "published",
        sandbox=SandboxConfig(allow_unisolated=allow_unisolated),
    )
    wf = build_team_workflow(config)
    state = wf.state_type.model_validate(options)
    prompt = state.prompt
    db = Database.from_settings(settings)
    try:
        await migrate(db)
        store = SQLCheckpointStore(db)
        run_id = await store.create_run(wf.name, state.model_dump(mode="json"))
        await store.append_event(run_id, RunEvent(OPTIONS_EVENT, data={"model": model}))
        view = TeamView(live=_out.is_terminal)
        _out.print(f"run {run_id}: team working on {prompt[:80]!r}")
        async with open_team_client(settings) as client:
            runner = WorkflowRunner(wf, store, client=client, plugins=[view])
            with view.showing(_out):
                result = await runner.resume(run_id)
                view.finish(result.status)
    finally:
        await db.dispose()
    if result.status != "succeeded" or result.state.report is None:
        _out.print(f"run {run_id} [red]{result.status}[/]")
        if result.error:
            _out.print(f"error: {result.error}", markup=False)
        return EXIT_ERROR
    _print_report(result.state.report)
    return 0 if result.state.report.ok else EXIT_ERROR


def _print_report(report: Any) -> None:
    table = Table("iteration", "passed", "failed", "result", title="tests", title_justify="left")
    for it in report.iterations:
        result = "[green]ok[/]" if it.ok else f"[red]{it.problem or 'failing'}[/]"
        table.add_row(str(it.number), str(it.passed), str(it.failed), result)
    _out.print(table)
    _out.print(f"files ({len(report.files)}): " + ", ".join(report.files), markup=False)
    _out.print(f"iterations: {report.iteration_count}   sandbox: {report.isolation}")
    _out.print(
        f"tokens: {report.input_tokens} in, {report.output_tokens} out   "
        f"cost: ${report.cost_usd:.4f}"
    )
    for note in report.notes:
        _out.print(f"note: {note}", markup=False)
    verdict = "[green]tests pass[/]" if report.ok else "[red]tests do not pass[/]"
    _out.print(f"result: {verdict}")
    _out.print(f"workspace: {report.workspace}", markup=False)


@dataclass
class TeamView(NodeView):
    """The node view, named by role, plus the test results of each iteration."""

    tests: list[str] = field(default_factory=list)

    async def after_node(
        self, ctx: NodeContext, state: BaseModel, delta: dict[str, Any]
    ) -> dict[str, Any]:
        delta = await super().after_node(ctx, state, delta)
        iterations = delta.get("iterations")
        if ctx.node == "test" and iterations:
            it = iterations[-1]
            line = f"tests, iteration {it.number}: {it.passed} passed, {it.failed} failed"
            if it.problem:
                line += f" ({it.problem[:120]})"
            self.tests.append(line)
            self._line(line)
        return delta

    def __rich__(self) -> Group:  # type: ignore[override]
        table = Table(title="team", title_justify="left")
        for column in ("role", "status", "visit", "elapsed"):
            table.add_column(column)
        now = time.perf_counter()
        colours = {"running": "yellow", "done": "green", "failed": "red"}
        for name, row in self.rows.items():
            elapsed = row.elapsed if row.elapsed is not None else now - row.started
            colour = colours.get(row.status, "white")
            table.add_row(
                ROLE_OF_NODE.get(name, name),
                f"[{colour}]{row.status}[/]",
                str(row.visit),
                f"{elapsed:.1f}s",
            )
        return Group(table, *(Text(line) for line in self.tests[-5:]))


def workspace(
    run_id: Annotated[str, typer.Argument(help="The run whose workspace to download.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The zip file to write.")],
) -> None:
    """Download a run's workspace (ARBOR_HOME/workspaces/RUN_ID) as a zip file."""
    settings = settings_or_exit()
    code = asyncio.run(_download(settings, run_id, out))
    sys.exit(code)


async def _download(settings: Settings, run_id: str, out: Path) -> int:
    from arbor.runtime.sandbox import Workspace, WorkspaceError
    from arbor.store import Database, RunRepository, migrate

    db = Database.from_settings(settings)
    try:
        await migrate(db)
        try:
            run = await RunRepository(db).get(run_id)
        except NotFoundError as exc:
            fail(str(exc), EXIT_USAGE)
    finally:
        await db.dispose()
    root = settings.home / "workspaces" / run_id
    output = run.output or {}
    report = output.get("report") if isinstance(output, dict) else None
    if isinstance(report, dict) and isinstance(report.get("workspace"), str):
        root = Path(report["workspace"])  # a run started with --out: its own directory
    if "/" in run_id or not root.is_dir():
        fail(f"run {run_id} has no workspace", EXIT_USAGE)
    try:
        ws = Workspace(root)
        data = await asyncio.to_thread(ws.zip_bytes)
    except WorkspaceError as exc:
        fail(str(exc), EXIT_ERROR)
    try:
        await asyncio.to_thread(out.write_bytes, data)
    except OSError as exc:
        fail(f"cannot write {str(out)!r}: {exc.strerror or exc}", EXIT_USAGE)
    _out.print(f"wrote {len(data)} bytes ({len(ws.files())} files) to {out}", markup=False)
    return 0
