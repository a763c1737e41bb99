"""``arbor run``: start (or resume) a durable workflow run with a live view of its nodes.

The run id is printed alone on the last line of output, whatever the outcome, so scripts can
pick it up with ``tail -n1``. Exit 0 when the run succeeded or waits for an approval, 1 when
it failed, 2 for bad usage (unknown workflow, bad ``--input``, unknown run).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from arbor.cli._common import EXIT_ERROR, EXIT_USAGE, exit_code_for, fail, settings_or_exit
from arbor.core.config import Settings
from arbor.core.errors import ArborError, ConfigError, NotFoundError

if TYPE_CHECKING:  # the runner pulls in agents, the store and SDKs: loaded only when running
    from arbor.agents.workflow.context import NodeContext
    from arbor.agents.workflow.graph import Workflow
    from arbor.agents.workflow.registry import WorkflowRegistry
    from arbor.agents.workflow.runner import RunResult
    from arbor.agents.workflow.sql import SQLCheckpointStore

__all__ = ["execute_run", "load_workflow", "parse_input", "run", "workflow_registry"]

#: Event the CLI adds to a new run so a resume (or an approval) reuses the same options.
OPTIONS_EVENT = "cli_options"

_out = Console(highlight=False, soft_wrap=True)


def run(
    workflow: str | None = typer.Argument(
        None, help="Workflow name (e.g. review-loop); optional with --resume."
    ),
    input: str | None = typer.Option(
        None, "--input", "-i", help="The initial state: a JSON object, or @FILE holding one."
    ),
    model: str | None = typer.Option(None, "--model", "-m", help="Model id provider:model."),
    resume: str | None = typer.Option(
        None, "--resume", metavar="RUN_ID", help="Continue this run from its last checkpoint."
    ),
) -> None:
    """Run a workflow durably, showing its nodes as they run; prints the run id last."""
    if workflow is None and resume is None:
        fail("give a WORKFLOW name (e.g. review-loop) or --resume RUN_ID", EXIT_USAGE)
    if resume is not None and input is not None:
        fail("--input cannot be combined with --resume (the run keeps its state)", EXIT_USAGE)
    if model is not None and ":" not in model:
        fail(f"--model must look like provider:model, got {model!r}", EXIT_USAGE)
    data = parse_input(input) if input is not None else None
    if workflow is not None:
        wf = load_workflow(workflow, model)
        if data is not None:
            _check_state(wf.state_type, data)
    settings = settings_or_exit()
    code = _run_async(
        execute_run(settings, workflow=workflow, model=model, data=data, resume=resume)
    )
    sys.exit(code)


def parse_input(raw: str) -> dict[str, Any]:
    """``--input`` as a JSON object (inline or ``@file``), or exit 2 naming the problem."""
    source = "--input"
    if raw.startswith("@"):
        path = Path(raw[1:])
        source = f"--input file {str(path)!r}"
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            fail(f"--input file {str(path)!r} does not exist", EXIT_USAGE)
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read --input file {str(path)!r}: {exc}", EXIT_USAGE)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"{source} is not valid JSON: {exc}", EXIT_USAGE)
    if not isinstance(value, dict):
        fail(f"{source} must be a JSON object, got {type(value).__name__}", EXIT_USAGE)
    return value


def workflow_registry() -> WorkflowRegistry:
    """Every installed workflow (``arbor.workflows`` entry points, the built-ins included)."""
    from arbor.agents.workflow.registry import WorkflowRegistry

    return WorkflowRegistry()


def load_workflow(name: str, model: str | None) -> Workflow[Any]:
    """The installed workflow ``name``: exit 2 naming the known ones when there is none,
    1 when its package cannot be imported."""
    try:
        return workflow_registry().get(name, model)
    except NotFoundError as exc:
        fail(str(exc), EXIT_USAGE)
    except ConfigError as exc:
        fail(str(exc), EXIT_ERROR)


def _check_state(state_type: type[BaseModel], data: Mapping[str, Any]) -> None:
    try:
        state_type.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        fail(f"--input does not fit the workflow's state: {problems}", EXIT_USAGE)


def _run_async(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except ArborError as exc:
        fail(str(exc), exit_code_for(exc))
    except KeyboardInterrupt:
        sys.exit(130)


async def execute_run(
    settings: Settings,
    *,
    workflow: str | None,
    model: str | None,
    data: dict[str, Any] | None,
    resume: str | None,
) -> int:
    """Create (or load) the run, run it to a stop with the live view, print the summary;
    returns the exit code."""
    from arbor.agents.workflow.checkpoints import RunEvent
    from arbor.agents.workflow.sql import SQLCheckpointStore
    from arbor.store import Database, migrate

    db = Database.from_settings(settings)
    try:
        await migrate(db)
        store = SQLCheckpointStore(db)
        if resume is not None:
            stored = await _get_run(store, resume)
            if workflow is not None and workflow != stored.workflow:
                fail(
                    f"run {resume} belongs to workflow {stored.workflow!r}, not {workflow!r}",
                    EXIT_USAGE,
                )
            model = model or await stored_model(store, resume)
            wf = load_workflow(stored.workflow, model)
            run_id = resume
        else:
            assert workflow is not None
            wf = load_workflow(workflow, model)
            state = wf.state_type.model_validate(data or {})
            run_id = await store.create_run(wf.name, state.model_dump(mode="json"))
            await store.append_event(run_id, RunEvent(OPTIONS_EVENT, data={"model": model}))
        try:
            result = await _drive(settings, wf, store, run_id)
        except KeyboardInterrupt:
            _out.print(f"interrupted; continue with: arbor run --resume {run_id}")
            print(run_id, flush=True)
            raise
        waiting: list[str] = []
        if result.status == "waiting_approval":
            pending = await store.approvals.list(run_id=run_id, status="pending")
            waiting = [a.node for a in pending]
        return _summary(result, waiting)
    finally:
        await db.dispose()


async def _get_run(store: SQLCheckpointStore, run_id: str) -> Any:
    try:
        return await store.runs.get(run_id)
    except NotFoundError as exc:
        fail(str(exc), EXIT_USAGE)


async def stored_model(store: SQLCheckpointStore, run_id: str) -> str | None:
    """The ``--model`` a run was started with (None: the settings' default)."""
    for event in await store.event_log.list(run_id, limit=20):
        if event.type == OPTIONS_EVENT:
            value = event.data.get("model")
            return value if isinstance(value, str) else None
    return None


async def _drive(
    settings: Settings, wf: Workflow[Any], store: SQLCheckpointStore, run_id: str
) -> RunResult[Any]:
    from arbor.agents.workflow.runner import WorkflowRunner
    from arbor.llm.setup import open_client

    view = NodeView(live=_out.is_terminal)
    async with open_client(settings) as client:
        runner = WorkflowRunner(wf, store, client=client, plugins=[view])
        with view.showing(_out):
            result = await runner.resume(run_id)
            view.finish(result.status)
    return result


def _summary(result: RunResult[Any], waiting: list[str]) -> int:
    """Print how the run ended, the run id alone last; the exit code."""
    rid = result.run_id
    if result.status == "succeeded":
        _out.print(f"run {rid} [green]succeeded[/]")
    elif result.status == "waiting_approval":
        at = f" at node {', '.join(waiting)}" if waiting else ""
        _out.print(f"run {rid} is [yellow]waiting for approval[/]{at}")
        _out.print(f"approve with: arbor runs approve {rid}   (or: arbor runs reject {rid})")
    else:
        _out.print(f"run {rid} [red]{result.status}[/]")
        if result.error:
            _out.print(f"error: {result.error}", markup=False)
    print(rid, flush=True)
    return 0 if result.status in ("succeeded", "waiting_approval") else EXIT_ERROR


@dataclass
class _Row:
    status: str
    visit: int
    started: float
    elapsed: float | None = None


@dataclass
class NodeView:
    """A node plugin that shows each node's progress: a rich Live table on a terminal, plain
    ``node NAME started/finished`` lines otherwise."""

    live: bool
    rows: dict[str, _Row] = field(default_factory=dict)

    async def before_node(self, ctx: NodeContext, state: BaseModel) -> None:
        self.rows[ctx.node] = _Row("running", ctx.visit, time.perf_counter())
        self._line(f"node {ctx.node} started")

    async def after_node(
        self, ctx: NodeContext, state: BaseModel, delta: dict[str, Any]
    ) -> dict[str, Any]:
        row = self.rows.get(ctx.node)
        if row is not None:
            row.status = "done"
            row.elapsed = time.perf_counter() - row.started
        self._line(f"node {ctx.node} finished")
        return delta

    def finish(self, status: str) -> None:
        """Nodes still running when the run stopped failed (a node raised)."""
        if status != "failed":
            return
        for name, row in self.rows.items():
            if row.status == "running":
                row.status = "failed"
                row.elapsed = time.perf_counter() - row.started
                self._line(f"node {name} failed")

    def _line(self, text: str) -> None:
        if not self.live:
            print(text, flush=True)

    @contextmanager
    def showing(self, console: Console) -> Iterator[None]:
        if not self.live:
            yield
            return
        from rich.live import Live

        with Live(self, console=console, refresh_per_second=5, transient=False):
            yield

    def __rich__(self) -> Table:
        table = Table(title="nodes", title_justify="left")
        table.add_column("node")
        table.add_column("status")
        table.add_column("visit", justify="right")
        table.add_column("elapsed", justify="right")
        now = time.perf_counter()
        colours = {"running": "yellow", "done": "green", "failed": "red"}
        for name, row in self.rows.items():
            elapsed = row.elapsed if row.elapsed is not None else now - row.started
            colour = colours.get(row.status, "white")
            table.add_row(name, f"[{colour}]{row.status}[/]", str(row.visit), f"{elapsed:.1f}s")
        return table
