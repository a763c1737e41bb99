"""``arbor doctor``: validate configuration and show the effective settings, secrets masked.

With ``ARBOR_REDIS_URL`` set it also says which mechanisms Redis backs and pings it (exit 1
when it does not answer: every replica would then run on limits it cannot share).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import typer
from rich.console import Console

from arbor.cli._common import settings_or_exit
from arbor.core.config import Settings

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
    if not settings.redis_url:
        out.print(
            "shared backends: in-process (set ARBOR_REDIS_URL to share rate limits, "
            "breaker state, the response cache and run events between processes)"
        )
        return
    shown = data["redis_url"]  # the password masked
    out.print(
        f"shared backends: Redis at {shown} (rate limits, breaker state, response "
        "cache tier, run event fan-out)"
    )
    try:
        problem = asyncio.run(_ping_redis(settings.redis_url))
    except ValueError as exc:  # not a redis://, rediss:// or unix:// URL
        out.print(f"[red]error:[/] ARBOR_REDIS_URL is not a Redis URL: {exc}")
        raise typer.Exit(2) from None
    if problem is not None:
        out.print(f"[red]error:[/] Redis at {shown} does not answer: {problem}")
        raise typer.Exit(1)
    out.print(f"Redis at {shown} answers.")


async def _ping_redis(url: str) -> str | None:
    """None when Redis answers PING within 3 s, else why not (never the URL: no secrets).
    ValueError for a URL that is not Redis's."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    redis = Redis.from_url(url, socket_connect_timeout=3.0, socket_timeout=3.0)
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await redis.aclose()
    return None


def _notes(settings: Settings) -> list[str]:
    notes = []
    if settings.profile == "prod" and settings.effective_database_url.startswith("sqlite"):
        notes.append("profile prod with a SQLite database: set ARBOR_DATABASE_URL to PostgreSQL")
    if settings.executor == "ray" and not settings.ray_address:
        notes.append("ARBOR_EXECUTOR=ray without ARBOR_RAY_ADDRESS starts a local Ray cluster")
    return notes
