"""``arbor doctor``: validate configuration and show the effective settings, secrets masked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console

from arbor.core.config import Settings
from arbor.service.cli._common import settings_or_exit

__all__ = ["doctor"]


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the settings as JSON only."),
) -> None:
    """Validate configuration and print the effective settings (secrets masked)."""
    settings = settings_or_exit()
    data = settings.masked()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    out = Console(highlight=False)
    out.print("[bold]Arbor configuration is valid.[/]")
    toml = Path(os.environ.get("ARBOR_CONFIG", "arbor.toml"))
    out.print(f"config file: {toml if toml.is_file() else '(none)'}; profile: {settings.profile}")
    for note in _notes(settings):
        out.print(f"[yellow]note:[/] {note}")
    out.print_json(json.dumps(data))


def _notes(settings: Settings) -> list[str]:
    notes = []
    if settings.profile == "prod" and settings.effective_database_url.startswith("sqlite"):
        notes.append("profile prod with a SQLite database: set ARBOR_DATABASE_URL to PostgreSQL")
    if settings.executor == "ray" and not settings.ray_address:
        notes.append("ARBOR_EXECUTOR=ray without ARBOR_RAY_ADDRESS starts a local Ray cluster")
    return notes
