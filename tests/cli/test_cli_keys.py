"""``arbor keys ...`` as a user runs it: real processes on a SQLite file under ARBOR_HOME."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from arbor.cli.keys import parse_duration
from arbor.core.errors import AuthError
from arbor.store import Database, KeyRepository


def _arbor(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARBOR_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "arbor.cli", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home,
    )


async def _verify(home: Path, key: str) -> str:
    async with Database(f"sqlite+aiosqlite:///{home / 'arbor.db'}") as db:
        return (await KeyRepository(db).verify(key)).id


def _refused(home: Path, key: str) -> str:
    with pytest.raises(AuthError) as info:
        asyncio.run(_verify(home, key))
    return str(info.value)


def test_create_list_rotate_revoke(tmp_path: Path) -> None:
    home = tmp_path
    made = _arbor(
        "create",
        "--name",
        "ci",
        "--scope",
        "read",
        "--expires-in",
        "30d",
        "--rpm",
        "10",
        "--tpm",
        "5000",
        "--budget",
        "2.5",
        home=home,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("arb_") and " " not in key
    key_id = asyncio.run(_verify(home, key))

    admin = _arbor("create", "--admin", home=home)
    admin_key = admin.stdout.strip().splitlines()[-1]
    listed = _arbor("list", "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["scopes"] for r in rows] == [["admin"], ["read"]]  # newest first
    ci = rows[1]
    assert ci["id"] == key_id and ci["status"] == "active" and ci["created_at"]
    assert (ci["rpm"], ci["tpm"], ci["budget_usd"]) == (10, 5000, 2.5)
    assert ci["expires_at"] is not None
    assert key not in listed.stdout and admin_key not in listed.stdout

    rotated = _arbor("rotate", key_id, home=home)
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip().splitlines()[-1]
    assert new_key != key and asyncio.run(_verify(home, new_key)) == key_id
    assert _refused(home, key) == "invalid API key"

    revoked = _arbor("revoke", key_id, home=home)
    assert revoked.returncode == 0 and key_id in revoked.stdout
    assert "revoked" in _refused(home, new_key)
    table = _arbor("list", home=home)
    assert table.returncode == 0 and "revoked" in table.stdout


def test_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    for args in (
        ("create", "--scope", "root"),
        ("create", "--expires-in", "soon"),
        ("create", "--rpm", "0"),
        ("revoke", "key_missing"),
        ("rotate", "key_missing"),
    ):
        done = _arbor(*args, home=tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
    assert json.loads(_arbor("list", "--json", home=tmp_path).stdout) == []


def test_parse_duration() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("2W") == timedelta(weeks=2)
    for bad in ("", "0d", "3x", "d", "1.5h", "-1d"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
