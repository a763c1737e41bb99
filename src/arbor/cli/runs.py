"""``arbor runs list|show|events|approve|reject``: inspect durable workflow runs and decide
their approvals (an approval or rejection resumes the run to its next stop right away)."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Column, Table

from arbor.cli._common import EXIT_USAGE, exit_code_for, fail, settings_or_exit
from arbor.core.config import Settings
from arbor.core.errors import ArborError, NotFoundError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: loaded only when a command runs
    from arbor.store import Database, EventRecord, RunRecord

__all__ = ["runs_app"]

T = TypeVar("T")

runs_app = typer.Typer(
    help="Inspect workflow runs, replay their events, approve or reject them.",
    no_args_is_help=True,
)

_out = Console(highlight=False, soft_wrap=True)

_STATUSES = ("pending", "running", "waiting_approval", "succeeded", "failed", "cancelled")


def _with_db(settings: Settings, fn: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``fn`` against the migrated database; ArborErrors exit with a one-line reason
    (an unknown run is bad usage: exit 2)."""

    async def go() -> T:
        from arbor.store import Database, migrate

        db = Database.from_settings(settings)
        try:
            await migrate(db)
            return await fn(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    except NotFoundError as exc:
        fail(str(exc), EXIT_USAGE)
    except ArborError as exc:
        fail(str(exc), exit_code_for(exc))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _run_json(run: RunRecord, *, details: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": run.id,
        "workflow": run.workflow,
        "status": run.status,
        "created_at": _iso(run.created_at),
        "updated_at": _iso(run.updated_at),
        "finished_at": _iso(run.finished_at),
        "current_node": run.current_node,
        "error": run.error,
    }
    if details:
        data["input"] = run.input
        data["output"] = run.output
        data["parent_id"] = run.parent_id
        data["thread_id"] = run.thread_id
    return data


def _event_json(event: EventRecord) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "type": event.type,
        "node": event.node,
        "data": event.data,
        "created_at": _iso(event.created_at),
    }


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


@runs_app.command("list")
def list_runs(
    status: str | None = typer.Option(None, "--status", help=f"One of: {', '.join(_STATUSES)}."),
    workflow: str | None = typer.Option(None, "--workflow", help="Only runs of this workflow."),
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="At most this many runs."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array (newest first)."),
) -> None:
    """Runs, newest first."""
    if status is not None and status not in _STATUSES:
        fail(f"--status must be one of {', '.join(_STATUSES)}, got {status!r}", EXIT_USAGE)
    settings = settings_or_exit()

    async def fetch(db: Database) -> list[RunRecord]:
        from arbor.store import RunRepository

        page = await RunRepository(db).list(
            status=status,  # type: ignore[arg-type]
            workflow=workflow,
            limit=limit,
        )
        return page.runs

    runs = _with_db(settings, fetch)
    if as_json:
        _print_json([_run_json(r) for r in runs])
        return
    if not runs:
        _out.print("no runs")
        return
    table = Table("workflow", "status", "node", "created", "updated")
    table.columns.insert(0, Column("id", no_wrap=True, min_width=max(len(r.id) for r in runs)))
    for r in runs:
        table.add_row(
            r.id,
            r.workflow,
            r.status,
            r.current_node or "",
            _when(r.created_at),
            _when(r.updated_at),
        )
    _out.print(table)


@runs_app.command("show")
def show(
    run_id: str = typer.Argument(..., help="The run id."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """A run's status, workflow, input, output, error, current node and timestamps."""
    settings = settings_or_exit()

    async def fetch(db: Database) -> dict[str, Any]:
        from arbor.store import ApprovalRepository, RunRepository

        run = await RunRepository(db).get(run_id)
        approvals = await ApprovalRepository(db).list(run_id=run_id)
        data = _run_json(run, details=True)
        data["approvals"] = [
            {
                "node": a.node,
                "status": a.status,
                "decided_by": a.decided_by,
                "reason": a.reason,
                "created_at": _iso(a.created_at),
                "decided_at": _iso(a.decided_at),
            }
            for a in approvals
        ]
        return data

    data = _with_db(settings, fetch)
    if as_json:
        _print_json(data)
        return
    table = Table("field", "value", show_header=False)
    for key in ("id", "workflow", "status", "current_node", "created_at", "updated_at"):
        table.add_row(key, str(data[key] or ""))
    table.add_row("finished_at", str(data["finished_at"] or ""))
    table.add_row("input", json.dumps(data["input"], indent=2, ensure_ascii=False))
    if data["output"] is not None:
        table.add_row("output", json.dumps(data["output"], indent=2, ensure_ascii=False))
    if data["error"]:
        table.add_row("error", data["error"])
    for a in data["approvals"]:
        reason = f" ({a['reason']})" if a["reason"] else ""
        table.add_row("approval", f"{a['node']}: {a['status']}{reason}")
    _out.print(table, markup=False)


@runs_app.command("events")
def events(
    run_id: str = typer.Argument(..., help="The run id."),
    after: int = typer.Option(0, "--after", min=0, help="Only events with a larger seq."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array (in seq order)."),
) -> None:
    """Replay a run's persisted events in order."""
    settings = settings_or_exit()

    async def fetch(db: Database) -> list[EventRecord]:
        from arbor.store import EventRepository, RunRepository

        await RunRepository(db).get(run_id)  # NotFoundError for an unknown run
        return await EventRepository(db).list(run_id, after_seq=after, limit=1_000_000)

    records = _with_db(settings, fetch)
    if as_json:
        _print_json([_event_json(e) for e in records])
        return
    table = Table("seq", "time", "type", "node", "data")
    for e in records:
        data = json.dumps(e.data, ensure_ascii=False) if e.data else ""
        table.add_row(str(e.seq), _when(e.created_at), e.type, e.node or "", data)
    _out.print(table, markup=False)


@runs_app.command("approve")
def approve(
    run_id: str = typer.Argument(..., help="The run id."),
    node: str | None = typer.Option(None, "--node", help="The approval node (default: pending)."),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept with the decision)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model for the rest of the run."),
) -> None:
    """Approve a run's pending approval and resume it; prints the run id last."""
    _decide(run_id, node, reason, model, approved=True)


@runs_app.command("reject")
def reject(
    run_id: str = typer.Argument(..., help="The run id."),
    node: str | None = typer.Option(None, "--node", help="The approval node (default: pending)."),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept with the decision)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model for the rest of the run."),
) -> None:
    """Reject a run's pending approval and resume it; prints the run id last."""
    _decide(run_id, node, reason, model, approved=False)


def _decide(
    run_id: str, node: str | None, reason: str | None, model: str | None, *, approved: bool
) -> None:
    if model is not None and ":" not in model:
        fail(f"--model must look like provider:model, got {model!r}", EXIT_USAGE)
    settings = settings_or_exit()

    async def decide(db: Database) -> str:
        from arbor.agents.workflow.sql import SQLCheckpointStore

        store = SQLCheckpointStore(db)
        run = await store.runs.get(run_id)
        pending = await store.approvals.list(run_id=run_id, status="pending")
        target = node or (pending[-1].node if pending else None)
        if target is None:
            fail(
                f"run {run_id} has no pending approval (status {run.status}); "
                "name the node with --node",
                EXIT_USAGE,
            )
        if not any(a.node == target for a in pending):
            fail(f"run {run_id} has no pending approval for node {target!r}", EXIT_USAGE)
        await store.decide_approval(run_id, target, approved, reason or "", by=f"cli:{_user()}")
        return target

    target = _with_db(settings, decide)
    verb = "approved" if approved else "rejected"
    _out.print(f"{verb} node {target} of run {run_id}; resuming")

    from arbor.cli.run import execute_run

    try:
        code = asyncio.run(
            execute_run(settings, workflow=None, model=model, data=None, resume=run_id)
        )
    except ArborError as exc:
        fail(str(exc), exit_code_for(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
