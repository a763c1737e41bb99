"""``arbor keys create|list|revoke|rotate``: API keys of the service, straight on the store
(no running server needed). A new or rotated key is printed once, alone on the last line."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console

from arbor.cli._common import EXIT_USAGE, exit_code_for, fail, settings_or_exit
from arbor.core.config import Settings
from arbor.core.errors import ArborError, NotFoundError

if TYPE_CHECKING:  # the store loads only when a command runs
    from arbor.store import KeyRecord, KeyRepository, KeyScope

__all__ = ["keys_app", "parse_duration"]

T = TypeVar("T")

keys_app = typer.Typer(
    help="Manage API keys: create (shown once), list, revoke, rotate.", no_args_is_help=True
)

_out = Console(highlight=False, soft_wrap=True)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw])")
_SCOPES: tuple[KeyScope, ...] = ("read", "run", "admin")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``30d``, ``2w`` → a timedelta (ValueError otherwise)."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None or int(found.group(1)) == 0:
        raise ValueError(f"invalid duration {text!r}: use a number and a unit, e.g. 30d or 12h")
    return timedelta(seconds=int(found.group(1)) * _UNITS[found.group(2)])


def _with_keys(settings: Settings, fn: Callable[[KeyRepository], Awaitable[T]]) -> T:
    async def go() -> T:
        from arbor.store import Database, KeyRepository, migrate

        db = Database.from_settings(settings)
        try:
            await migrate(db)
            return await fn(KeyRepository(db))
        finally:
            await db.dispose()

    from arbor.store.keys import KeyRevokedError

    try:
        return asyncio.run(go())
    except (NotFoundError, KeyRevokedError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    except ArborError as exc:
        fail(str(exc), exit_code_for(exc))


def _key_json(record: KeyRecord) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "id": record.id,
        "name": record.name,
        "prefix": f"arb_{record.prefix}",
        "scopes": list(record.scopes),
        "status": record.status(),
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "revoked_at": iso(record.revoked_at),
        "last_used_at": iso(record.last_used_at),
        "rpm": record.rpm,
        "tpm": record.tpm,
        "budget_usd": record.budget_usd,
    }


@keys_app.command("create")
def create(
    name: str = typer.Option("", "--name", help="A label shown in lists."),
    admin: bool = typer.Option(False, "--admin", help="Grant the admin scope."),
    scope: list[str] = typer.Option(
        [], "--scope", help="read, run or admin (repeatable; wider implies narrower)."
    ),
    expires_in: str | None = typer.Option(None, "--expires-in", help="e.g. 30d, 12h, 2w."),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Requests per minute."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tokens per minute."),
    budget: float | None = typer.Option(None, "--budget", min=0.0, help="Budget in USD."),
) -> None:
    """Create a key; it is printed once, alone on the last line."""
    bad = [s for s in scope if s not in _SCOPES]
    if bad:
        fail(f"--scope must be one of {', '.join(_SCOPES)}, not {bad[0]!r}", EXIT_USAGE)
    scopes: list[KeyScope] = [s for s in _SCOPES if s in scope or (admin and s == "admin")]
    expires_at = None
    if expires_in is not None:
        try:
            expires_at = datetime.now(UTC) + parse_duration(expires_in)
        except ValueError as exc:
            fail(f"--expires-in: {exc}", EXIT_USAGE)
    settings = settings_or_exit()
    new = _with_keys(
        settings,
        lambda keys: keys.create(
            name,
            scopes=scopes or ["run"],
            expires_at=expires_at,
            rpm=rpm,
            tpm=tpm,
            budget_usd=budget,
        ),
    )
    record = new.record
    expiry = record.expires_at.isoformat() if record.expires_at else "never"
    _out.print(f"created key {record.id} ({', '.join(record.scopes)}; expires {expiry})")
    _out.print("store it now: it is shown only this once")
    typer.echo(new.key)


@keys_app.command("list")
def list_keys(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array, newest first."),
) -> None:
    """List keys, newest first (never their secrets)."""
    settings = settings_or_exit()
    records = _with_keys(settings, lambda keys: keys.list())
    if as_json:
        typer.echo(json.dumps([_key_json(r) for r in records], indent=2))
        return
    if not records:
        _out.print("no keys")
        return
    from rich.table import Table

    table = Table()
    for column in ("id", "name", "prefix", "scopes", "status", "created", "last used", "limits"):
        table.add_column(column, no_wrap=column in ("id", "prefix"))
    for r in records:
        limits = ", ".join(
            f"{label} {value}"
            for label, value in (("rpm", r.rpm), ("tpm", r.tpm), ("$", r.budget_usd))
            if value is not None
        )
        used = r.last_used_at.strftime("%Y-%m-%d %H:%M") if r.last_used_at else "-"
        table.add_row(
            r.id,
            r.name,
            f"arb_{r.prefix}",
            ",".join(r.scopes),
            r.status(),
            r.created_at.strftime("%Y-%m-%d %H:%M"),
            used,
            limits or "-",
        )
    # Piped output is not squeezed to 80 columns: ids and prefixes stay whole.
    (_out if _out.is_terminal else Console(highlight=False, width=200)).print(table)


@keys_app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key's id (key_...).")) -> None:
    """Revoke a key: refused from its next request on."""
    settings = settings_or_exit()
    record = _with_keys(settings, lambda keys: keys.revoke(key_id))
    _out.print(f"revoked {record.id}")


@keys_app.command("rotate")
def rotate(key_id: str = typer.Argument(..., help="The key's id (key_...).")) -> None:
    """Give a key a new secret (printed last); the old one is refused from now on."""
    settings = settings_or_exit()
    new = _with_keys(settings, lambda keys: keys.rotate(key_id))
    _out.print(f"rotated {new.record.id}; the old key no longer works")
    _out.print("store it now: it is shown only this once")
    typer.echo(new.key)
