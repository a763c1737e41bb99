"""A batch survives ``kill -9``: a child ``arbor batch run`` is killed at ~20 %, its
``resume`` at ~50 % and ~80 %, and a last ``resume`` finishes. Every item ends with exactly
one result, and the upstream saw at most N requests plus those in flight at each kill."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from arbor.testing.mock_upstream import spawn_mock_upstream

N = 400


def _arbor(args: list[str], home: Path, url: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "ARBOR_HOME": str(home),
        "ARBOR_PROVIDERS__MOCK__BASE_URL": url,
        "ARBOR_LLM__CACHE__ENABLED": "false",
        "ARBOR_LOG_LEVEL": "warning",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "arbor.cli", "batch", *args],
        env=env,
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _counts(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(db, timeout=30)
    try:
        rows = conn.execute("SELECT status, count(*) FROM batch_items GROUP BY status").fetchall()
    except sqlite3.OperationalError:  # not migrated yet
        return {}
    finally:
        conn.close()
    return {status: n for status, n in rows}


def _kill_at(proc: subprocess.Popen[str], db: Path, fraction: float) -> int:
    """SIGKILL the child once ``fraction`` of the items succeeded; items in flight then."""
    deadline = time.monotonic() + 120
    while _counts(db).get("succeeded", 0) < fraction * N:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()  # reaps it and closes its pipes
    return _counts(db).get("running", 0)


@pytest.mark.slow
def test_kill_9_at_20_50_80_percent_then_resume(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    data = home / "d.jsonl"
    data.write_text("".join(json.dumps({"q": f"item {i}"}) + "\n" for i in range(N)))
    db = home / "arbor.db"
    in_flight = []
    with spawn_mock_upstream(latency_ms=40) as url:
        run = [
            "run",
            str(data),
            "--template",
            "Q: {{ q }}",
            "--model",
            "mock:mock-1",
            "--concurrency",
            "4",
            "--lease-seconds",
            "1",
            "--no-progress",
        ]
        proc = _arbor(run, home, url)
        in_flight.append(_kill_at(proc, db, 0.2))
        conn = sqlite3.connect(db)
        (batch_id,) = conn.execute("SELECT id FROM batches").fetchone()
        conn.close()
        for fraction in (0.5, 0.8):
            proc = _arbor(["resume", batch_id, "--no-progress"], home, url)
            in_flight.append(_kill_at(proc, db, fraction))
        last = _arbor(["resume", batch_id, "--no-progress"], home, url)
        out, err = last.communicate(timeout=240)
        assert last.returncode == 0, err
        assert out.strip().splitlines()[-1] == batch_id
        with urllib.request.urlopen(url.removesuffix("/v1") + "/_stats", timeout=5) as r:
            stats = json.loads(r.read())
        export = _arbor(["export", batch_id, "--format", "jsonl"], home, url)
        lines, err = export.communicate(timeout=60)
        assert export.returncode == 0, err
    items = [json.loads(line) for line in lines.splitlines()]
    assert len(items) == N
    assert len({i["item"] for i in items}) == N
    assert all(i["status"] == "succeeded" and i["output"] for i in items)
    assert [i["input"]["q"] for i in items] == [f"item {k}" for k in range(N)]
    # Requests cut by a kill have no status; none was refused or failed.
    assert set(stats["by_status"]) == {"200"} and stats["by_status"]["200"] >= N
    assert N <= stats["requests"] <= N + sum(in_flight), (stats, in_flight)
