"""``arbor agents list|create|show|disable|enable``: stored agent definitions and their
supervision status (``enable`` also re-enables an agent disabled for flapping)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import typer
from rich.console import Console

from arbor.cli._common import EXIT_USAGE, exit_code_for, fail, settings_or_exit
from arbor.core.config import Settings
from arbor.core.errors import ArborError, NotFoundError

if TYPE_CHECKING:  # the store and the agents layer load only when a command runs
    from arbor.agents.definitions import AgentDefinition
    from arbor.store import AgentRecord, AgentRepository, AgentStatus

__all__ = ["agents_app"]

T = TypeVar("T")

agents_app = typer.Typer(
    help="Manage agent definitions: create from YAML, list, show, disable, enable.",
    no_args_is_help=True,
)

_out = Console(highlight=False, soft_wrap=True)

_STATUSES = ("enabled", "disabled", "disabled_flapping")


def _with_repo(settings: Settings, fn: Callable[[AgentRepository], Awaitable[T]]) -> T:
    """Run ``fn`` against the migrated database's agents; bad input exits 2, other
    ArborErrors 1, always with a one-line reason."""

    async def go() -> T:
        from arbor.store import AgentRepository, Database, migrate

        db = Database.from_settings(settings)
        try:
            await migrate(db)
            return await fn(AgentRepository(db))
        finally:
            await db.dispose()

    from arbor.agents.definitions import AgentDefinitionError
    from arbor.store import AgentExistsError

    try:
        return asyncio.run(go())
    except (NotFoundError, AgentExistsError, AgentDefinitionError) as exc:
        fail(str(exc), EXIT_USAGE)
    except ArborError as exc:
        fail(str(exc), exit_code_for(exc))


def _iso(value: datetime) -> str:
    return value.isoformat()


def _agent_json(record: AgentRecord, *, details: bool = False) -> dict[str, Any]:
    definition = record.definition
    data: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "created_at": _iso(record.created_at),
        "updated_at": _iso(record.updated_at),
        "role": definition.get("role"),
        "model": definition.get("model"),
        "description": definition.get("description", ""),
    }
    if details:
        data["failures"] = [_iso(t) for t in record.failures]
        data["definition"] = definition
    return data


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=False))


@agents_app.command("list")
def list_agents(
    status: str | None = typer.Option(
        None, "--status", help=f"Only agents with this status ({', '.join(_STATUSES)})."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array, newest first."),
) -> None:
    """List stored agents, newest first."""
    if status is not None and status not in _STATUSES:
        fail(f"--status must be one of {', '.join(_STATUSES)}, not {status!r}", EXIT_USAGE)
    settings = settings_or_exit()
    wanted = cast("AgentStatus | None", status)
    records = _with_repo(settings, lambda repo: repo.list(status=wanted))
    records.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    if as_json:
        _print_json([_agent_json(r) for r in records])
        return
    if not records:
        _out.print("no agents")
        return
    rows = [("NAME", "STATUS", "ROLE", "MODEL", "ID", "CREATED")]
    rows += [
        (
            r.name,
            r.status,
            str(r.definition.get("role") or "-"),
            str(r.definition.get("model") or "-"),
            r.id,
            r.created_at.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@agents_app.command("create")
def create(
    file: Path | None = typer.Option(
        None, "--file", "-f", help="YAML (or .json) file with one or more agent definitions."
    ),
    name: str | None = typer.Option(None, "--name", help="Agent name (a slug)."),
    role: str | None = typer.Option(None, "--role", help="A built-in role."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model id provider:model."),
    instructions: str | None = typer.Option(
        None, "--instructions", help="Instructions (a Jinja2 template); needed without --role."
    ),
    replace: bool = typer.Option(
        False, "--replace", help="Replace the definition of agents that already exist."
    ),
) -> None:
    """Create agents from a file, or one agent from options."""
    from arbor.agents.definitions import AgentDefinition, AgentDefinitionError, load_definitions

    definitions: list[AgentDefinition]
    try:
        if file is not None:
            if name or role or model or instructions:
                fail("give either --file or --name/--role/--model/--instructions", EXIT_USAGE)
            definitions = load_definitions(file)
        elif name is not None:
            fields = {"name": name, "role": role, "model": model, "instructions": instructions}
            data = {k: v for k, v in fields.items() if v is not None}
            definitions = [AgentDefinition.parse(data)]
        else:
            fail("give --file FILE, or --name NAME with --role or --instructions", EXIT_USAGE)
    except AgentDefinitionError as exc:
        fail(str(exc), EXIT_USAGE)
    settings = settings_or_exit()
    results = _with_repo(settings, lambda repo: _store(repo, definitions, replace=replace))
    for record, existed in results:
        verb = "replaced" if existed else "created"
        _out.print(f"{verb} agent {record.name} ({record.id})")


async def _store(
    repo: AgentRepository, definitions: list[AgentDefinition], *, replace: bool
) -> list[tuple[AgentRecord, bool]]:
    from arbor.store import AgentExistsError

    existing = {r.name for r in await repo.list()}
    taken = [d.name for d in definitions if d.name in existing]
    if taken and not replace:
        names = ", ".join(taken)
        raise AgentExistsError(
            f"agent(s) {names} already exist; use --replace to replace them", name=taken[0]
        )
    out: list[tuple[AgentRecord, bool]] = []
    for d in definitions:
        if replace:
            record = await repo.put(d.name, d.to_document())
        else:
            record = await repo.create(d.name, d.to_document())
        out.append((record, d.name in existing))
    return out


@agents_app.command("show")
def show(
    name: str = typer.Argument(..., help="Agent name or id."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show one agent: its definition, status and recent failures."""
    settings = settings_or_exit()
    record = _with_repo(settings, lambda repo: repo.find(name))
    data = _agent_json(record, details=True)
    if as_json:
        _print_json(data)
        return
    for key in ("name", "id", "status", "role", "model", "description", "created_at"):
        if data.get(key):
            _out.print(f"{key + ':':13} {data[key]}")
    if record.failures:
        _out.print(f"{'failures:':13} {len(record.failures)} (last {data['failures'][-1]})")
    _out.print("definition:")
    _out.print(json.dumps(record.definition, indent=2))


@agents_app.command("disable")
def disable(name: str = typer.Argument(..., help="Agent name or id.")) -> None:
    """Disable an agent: it will not run until enabled."""
    record = _set_status(name, "disabled")
    _out.print(f"disabled agent {record.name}")


@agents_app.command("enable")
def enable(name: str = typer.Argument(..., help="Agent name or id.")) -> None:
    """Enable an agent (also one disabled for flapping); its failure count starts afresh."""
    record = _set_status(name, "enabled")
    _out.print(f"enabled agent {record.name}")


def _set_status(name: str, status: str) -> AgentRecord:
    settings = settings_or_exit()

    async def go(repo: AgentRepository) -> AgentRecord:
        record = await repo.find(name)
        return await repo.set_status(record.id, cast("AgentStatus", status))

    return _with_repo(settings, go)
