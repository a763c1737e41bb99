"""``arbor chat`` as a user runs it: a real process, real HTTP to the mock, the real model."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from arbor.testing.mock_upstream import spawn_mock_upstream


def _arbor(*args: str, home: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARBOR_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "arbor.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=home,
    )


def test_chat_streams_a_reply_and_records_usage(tmp_path: Path) -> None:
    with spawn_mock_upstream() as url:
        proc = _arbor(
            "chat",
            "--model",
            "mock:mock-1",
            "--base-url",
            url,
            "--api-key",
            "sk-cli-secret-1",
            "Hello from the CLI",
            home=tmp_path,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Mock reply") and "Hello from the CLI" in proc.stdout
    assert "sk-cli-secret-1" not in proc.stdout + proc.stderr
    with sqlite3.connect(tmp_path / "arbor.db") as db:
        rows = db.execute("select provider, model, status from usage_records").fetchall()
    assert rows == [("mock", "mock-1", "ok")]


def test_chat_no_stream_and_interactive(tmp_path: Path) -> None:
    with spawn_mock_upstream() as url:
        one = _arbor(
            "chat", "-m", "mock:mock-1", "--base-url", url, "--no-stream", "hi", home=tmp_path
        )
        talk = _arbor(
            "chat",
            "-m",
            "mock:mock-1",
            "--base-url",
            url,
            home=tmp_path,
            stdin="first line\nsecond line\n/exit\n",
        )
    assert one.returncode == 0 and one.stdout.startswith("Mock reply")
    assert talk.returncode == 0, talk.stderr
    assert talk.stdout.count("Mock reply") == 2
    assert "second line" in talk.stdout


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--model", "nope:x", "hi"], 1, "unknown provider 'nope'"),
        (["--model", "gpt-4o", "hi"], 2, "provider:model"),
        (["--model", "mock:x", "--base-url", "ftp://x", "hi"], 2, "--base-url"),
    ],
)
def test_chat_bad_input_is_one_line_no_traceback(
    tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    proc = _arbor("chat", *args, home=tmp_path)
    assert proc.returncode == code
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.model
def test_chat_with_the_embedded_model(tmp_path: Path) -> None:
    proc = _arbor(
        "chat", "--model", "local:smollm2", "--max-tokens", "24", "Say hello", home=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip()) > 0
    assert "out tokens" in proc.stderr
