"""``arbor batch run|resume|list|show|pause|cancel|export``: batches from the command line.

``run`` stores the dataset as items, then drives them (``--executor local``, the default:
in this process; ``ray``: Ray actors, see :mod:`arbor.runtime.ray_executor`) with a live
progress bar on stderr (done, failed, rate, ETA, tokens, cost); the batch id is printed
alone on the last line of stdout whatever the outcome, so scripts can ``tail -n1``. A killed
or interrupted ``run`` leaves the batch resumable: ``arbor batch resume ID`` picks up the
pending items and, once their leases expire, the ones the dead process held.

Exit codes: 0 when the batch finished (some items may have failed: the summary says how
many) or paused on its budget; 1 when it was cancelled or failed; 2 for bad usage or input
(unreadable dataset, bad template, unknown agent/workflow/batch, an unknown ``--executor``,
``ray`` without Ray installed).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from arbor.cli._common import EXIT_ERROR, EXIT_USAGE, fail, settings_or_exit
from arbor.core.config import Settings
from arbor.core.errors import ArborError

if TYPE_CHECKING:  # the runtime pulls in agents, the store and SDKs: loaded when a command runs
    from arbor.runtime import BatchService
    from arbor.runtime.executor import LocalExecutor
    from arbor.runtime.ray_executor import RayExecutor
    from arbor.store.batches import BatchRecord

__all__ = ["batch_app"]

T = TypeVar("T")

batch_app = typer.Typer(
    help="Run datasets through a prompt template, an agent or a workflow, at scale.",
    no_args_is_help=True,
)

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False)
_STATUSES = ("pending", "running", "paused", "succeeded", "failed", "cancelled")


# ---- plumbing ---------------------------------------------------------------------------


def _with_service(settings: Settings, fn: Callable[[BatchService], Awaitable[T]]) -> T:
    """Run ``fn`` with a BatchService over the migrated database; a user-facing error
    exits with a one-line reason (2 for bad input, 1 otherwise)."""

    async def go() -> T:
        from arbor.runtime import BatchService
        from arbor.store import Database, migrate

        db = Database.from_settings(settings)
        try:
            await migrate(db)
            return await fn(BatchService(db, settings))
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    except ValidationError as exc:
        fail(_validation_message(exc), EXIT_USAGE)
    except ArborError as exc:
        fail(str(exc), _exit_code(exc))


def _exit_code(exc: ArborError) -> int:
    from arbor.agents.definitions import AgentDefinitionError
    from arbor.core.errors import ConfigError, NotFoundError
    from arbor.runtime import BatchConflictError, DatasetError, TemplateSyntaxError

    usage = (
        ConfigError,
        NotFoundError,
        DatasetError,
        TemplateSyntaxError,
        AgentDefinitionError,
        BatchConflictError,
    )
    return EXIT_USAGE if isinstance(exc, usage) else EXIT_ERROR


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"invalid batch options: {where + ': ' if where else ''}{message}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _batch_json(b: BatchRecord) -> dict[str, Any]:
    p = b.progress
    data: dict[str, Any] = {
        "id": b.id,
        "name": b.name,
        "kind": b.kind,
        "status": b.status,
        "paused_reason": b.paused_reason,
        "created_at": _iso(b.created_at),
        "updated_at": _iso(b.updated_at),
        "finished_at": _iso(b.finished_at),
        "total": p.total if p else b.total,
        "succeeded": p.succeeded if p else b.succeeded,
        "failed": p.failed if p else b.failed,
        "cancelled": p.cancelled if p else b.cancelled,
        "input_tokens": p.input_tokens if p else b.input_tokens,
        "output_tokens": p.output_tokens if p else b.output_tokens,
        "cost_usd": p.cost_usd if p else b.cost_usd,
        "error": b.error,
    }
    if p is not None:
        data["pending"], data["running"] = p.pending, p.running
    return data


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _check_executor(executor: str | None, settings: Settings) -> Settings:
    """The settings with the chosen executor; Ray must be importable to choose it."""
    chosen = executor or settings.executor
    if chosen not in ("local", "ray"):
        fail(f"--executor must be local or ray, got {chosen!r}", EXIT_USAGE)
    if chosen == "ray":
        from arbor.core.errors import ConfigError
        from arbor.runtime.ray_executor import require_ray

        try:
            require_ray()
        except ConfigError as exc:
            from rich.markup import escape

            fail(escape(str(exc)), EXIT_USAGE)  # "arbor[ray]" is not markup
    return settings.model_copy(update={"executor": chosen})


# ---- running with a progress bar --------------------------------------------------------


async def _drive(service: BatchService, batch_id: str, *, show_progress: bool) -> BatchRecord:
    if service.settings.executor == "ray":  # actors with their own clients (ray_executor)
        from arbor.runtime.ray_executor import RayExecutor

        driver = RayExecutor(service.settings, service.repo, batch_id)
        task = asyncio.create_task(driver.run())
        if show_progress:
            await _watch(driver, task)
        return await task
    async with service.open_client(batch_id) as client:
        executor = await service.executor(batch_id, client)
        task = asyncio.create_task(executor.run())
        if show_progress:
            await _watch(executor, task)
        return await task


async def _watch(executor: LocalExecutor | RayExecutor, task: asyncio.Task[BatchRecord]) -> None:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TextColumn("{task.fields[rate]:.1f}/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[tokens]} tok  ${task.fields[cost]:.4f}"),
    )
    with Progress(*columns, console=_err, transient=False) as bar:
        p = executor.progress
        tid = bar.add_task("batch", total=None, failed=0, rate=0.0, tokens=0, cost=0.0)
        while True:
            bar.update(
                tid,
                total=p.total or None,
                completed=p.done,
                failed=p.failed,
                rate=p.rate(),
                tokens=p.input_tokens + p.output_tokens,
                cost=p.cost_usd,
            )
            if task.done():
                return
            await asyncio.wait({task}, timeout=0.25)


def _summary(b: BatchRecord) -> int:
    """Print how the batch ended; returns the exit code."""
    p = b.progress
    counts = (
        f"{p.succeeded} succeeded, {p.failed} failed, {p.cancelled} cancelled, "
        f"{p.pending + p.running} left; {p.input_tokens + p.output_tokens} tokens, "
        f"${p.cost_usd:.4f}"
        if p is not None
        else ""
    )
    if b.status == "paused":
        _out.print(f"batch paused ({b.paused_reason}): {counts}")
        hint = " --budget USD" if b.paused_reason == "budget" else ""
        _out.print(f"continue with: arbor batch resume {b.id}{hint}")
        return 0
    _out.print(f"batch {b.status}: {counts}")
    return 0 if b.status == "succeeded" else EXIT_ERROR


def _run_and_report(
    settings: Settings,
    make: Callable[[BatchService], Awaitable[str]],
    *,
    show_progress: bool,
) -> None:
    """Create or pick the batch, drive it, print the summary and the id last."""
    holder: dict[str, str] = {}

    async def go(service: BatchService) -> BatchRecord:
        batch_id = await make(service)
        holder["id"] = batch_id
        return await _drive(service, batch_id, show_progress=show_progress)

    try:
        record = _with_service(settings, go)
    except KeyboardInterrupt:
        if "id" not in holder:
            raise
        _out.print(f"interrupted; continue with: arbor batch resume {holder['id']}")
        _out.print(holder["id"])
        raise typer.Exit(130) from None
    code = _summary(record)
    _out.print(record.id)
    if code:
        raise typer.Exit(code)


# ---- commands ---------------------------------------------------------------------------


@batch_app.command("run")
def run_batch(
    dataset: Path = typer.Argument(..., help="JSONL or CSV (with a header row) file of rows."),
    template: str | None = typer.Option(
        None, "--template", "-t", help="Jinja2 prompt per row (row keys are variables), or @FILE."
    ),
    agent: str | None = typer.Option(None, "--agent", "-a", help="A stored agent, per row."),
    workflow: str | None = typer.Option(None, "--workflow", "-w", help="A workflow, per row."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model id provider:model."),
    concurrency: int = typer.Option(16, "--concurrency", "-c", min=1, max=4096),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Requests per minute."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tokens per minute."),
    budget: float | None = typer.Option(None, "--budget", min=0.0, help="USD; pauses when spent."),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1, max=20),
    lease_seconds: float = typer.Option(60.0, "--lease-seconds", min=0.1, max=3600.0),
    executor: str | None = typer.Option(None, "--executor", help="local (default) or ray."),
    fmt: str | None = typer.Option(None, "--format", help="jsonl or csv (default: by suffix)."),
    name: str | None = typer.Option(None, "--name", help="A name to list it by."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Create a batch from DATASET and run it; prints the batch id last."""
    targets = {"template": template, "agent": agent, "workflow": workflow}
    given = [k for k, v in targets.items() if v is not None]
    if len(given) != 1:
        fail("give exactly one of --template, --agent or --workflow", EXIT_USAGE)
    kind = given[0]
    settings = _check_executor(executor, settings_or_exit())
    if fmt is not None and fmt not in ("jsonl", "csv"):
        fail(f"--format must be jsonl or csv, got {fmt!r}", EXIT_USAGE)
    if template is not None and template.startswith("@"):
        template = _read_template(Path(template[1:]))
        targets["template"] = template
    options = {
        "concurrency": concurrency,
        "rpm": rpm,
        "tpm": tpm,
        "budget_usd": budget,
        "max_attempts": max_attempts,
        "lease_seconds": lease_seconds,
    }

    async def create(service: BatchService) -> str:
        from arbor.runtime import BatchSpec

        spec = BatchSpec.model_validate(
            {"kind": kind, kind: targets[kind], "model": model, "options": options}
        )
        record = await service.create(dataset, spec, name=name, fmt=fmt)  # type: ignore[arg-type]
        bad = f", {record.failed} malformed" if record.failed else ""
        _err.print(f"batch {record.id}: {record.total} items{bad}")
        return record.id

    _run_and_report(settings, create, show_progress=progress)


def _read_template(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        fail(f"cannot read template file {str(path)!r}: {reason}", EXIT_USAGE)


@batch_app.command("resume")
def resume_batch(
    batch_id: str = typer.Argument(..., help="The batch to continue."),
    budget: float | None = typer.Option(None, "--budget", min=0.0, help="A new budget (USD)."),
    executor: str | None = typer.Option(None, "--executor", help="local (default) or ray."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Continue a paused or interrupted batch; prints the batch id last."""
    settings = _check_executor(executor, settings_or_exit())

    async def pick(service: BatchService) -> str:
        await service.resume(batch_id, budget_usd=budget)
        return batch_id

    _run_and_report(settings, pick, show_progress=progress)


@batch_app.command("list")
def list_batches(
    status: str | None = typer.Option(None, "--status", help=f"One of: {', '.join(_STATUSES)}."),
    limit: int = typer.Option(20, "--limit", min=1, max=1000),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array (newest first)."),
) -> None:
    """Batches, newest first."""
    if status is not None and status not in _STATUSES:
        fail(f"--status must be one of {', '.join(_STATUSES)}, got {status!r}", EXIT_USAGE)
    settings = settings_or_exit()

    async def fetch(service: BatchService) -> list[BatchRecord]:
        return await service.list(status=status, limit=limit)  # type: ignore[arg-type]

    batches = _with_service(settings, fetch)
    if as_json:
        _print_json([_batch_json(b) for b in batches])
        return
    if not batches:
        _out.print("no batches")
        return
    table = Table("id", "name", "kind", "status", "items", "done", "failed", "cost", "created")
    for b in batches:
        table.add_row(
            b.id,
            b.name,
            b.kind,
            b.status + (f" ({b.paused_reason})" if b.paused_reason else ""),
            str(b.total),
            str(b.succeeded),
            str(b.failed),
            f"${b.cost_usd:.4f}",
            b.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    _out.print(table)


@batch_app.command("show")
def show_batch(
    batch_id: str = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """A batch's status, live counts, usage and options."""
    settings = settings_or_exit()

    async def fetch(service: BatchService) -> BatchRecord:
        return await service.get(batch_id)

    b = _with_service(settings, fetch)
    data = _batch_json(b)
    data["spec"] = b.spec
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        if key != "spec" and value is not None:
            _out.print(f"{key:>14}: {value}")
    _out.print(f"{'spec':>14}: {json.dumps(b.spec, ensure_ascii=False)}")


@batch_app.command("pause")
def pause_batch(batch_id: str = typer.Argument(...)) -> None:
    """Pause a batch; its executor stops claiming items within about a second."""
    settings = settings_or_exit()

    async def act(service: BatchService) -> BatchRecord:
        return await service.pause(batch_id)

    b = _with_service(settings, act)
    _out.print(f"batch {b.id} paused")


@batch_app.command("cancel")
def cancel_batch(batch_id: str = typer.Argument(...)) -> None:
    """Cancel a batch: every unfinished item is cancelled (results in flight are refused)."""
    settings = settings_or_exit()

    async def act(service: BatchService) -> BatchRecord:
        return await service.cancel(batch_id)

    b = _with_service(settings, act)
    p = b.progress
    n = p.cancelled if p is not None else b.cancelled
    _out.print(f"batch {b.id} cancelled ({n} items cancelled)")


@batch_app.command("export")
def export_batch(
    batch_id: str = typer.Argument(...),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or csv."),
    out: Path | None = typer.Option(None, "--out", "-o", help="File to write (default stdout)."),
) -> None:
    """Every item with its input, status, output and error, in item order."""
    if fmt not in ("jsonl", "csv"):
        fail(f"--format must be jsonl or csv, got {fmt!r}", EXIT_USAGE)
    settings = settings_or_exit()

    async def act(service: BatchService) -> int:
        if out is None:
            return await service.export(batch_id, sys.stdout, fmt)  # type: ignore[arg-type]
        try:
            handle = out.open("w", encoding="utf-8", newline="")
        except OSError as exc:
            fail(f"cannot write {str(out)!r}: {exc.strerror}", EXIT_USAGE)
        with handle:
            return await service.export(batch_id, handle, fmt)  # type: ignore[arg-type]

    count = _with_service(settings, act)
    if out is not None:
        _err.print(f"wrote {count} items to {out}")
