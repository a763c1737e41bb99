"""``arbor serve`` as a real process: it serves, and on SIGTERM drains in-flight requests and
streams before exiting 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from arbor.store import Database, RunRepository
from arbor.testing.mock_upstream import spawn_mock_upstream

ADMIN = "serve-test-admin-key-0123456789abcdefghijkl"
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(base: str, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"arbor serve exited early with {proc.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("arbor serve did not become healthy")


@pytest.fixture
def upstream() -> Iterator[str]:
    # Each reply takes 1.5 s; streams send 6 chunks 0.3 s apart.
    with spawn_mock_upstream(latency_ms=1500, chunks=6, chunk_delay_ms=300) as url:
        yield url


@pytest.fixture
def chat_upstream() -> Iterator[str]:
    """The same, for the chat calls alone (provider ``chat``): its request count tells when
    they reached it, apart from the run's calls."""
    with spawn_mock_upstream(latency_ms=1500, chunks=6, chunk_delay_ms=300) as url:
        yield url


@pytest.fixture
def server(
    tmp_path: Path, upstream: str, chat_upstream: str
) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    port = _free_port()
    env = {
        **os.environ,
        "ARBOR_HOME": str(tmp_path / "home"),
        "ARBOR_ADMIN_KEY": ADMIN,
        "ARBOR_PROVIDERS__MOCK__BASE_URL": upstream,
        "ARBOR_PROVIDERS__MOCK__API_KEY": "sk-mock-0000000000",
        "ARBOR_PROVIDERS__CHAT__BASE_URL": chat_upstream,
        "ARBOR_PROVIDERS__CHAT__API_KEY": "sk-mock-0000000000",
        "ARBOR_DEFAULT_MODEL": "mock:mock-1",
        "ARBOR_LLM__CACHE__ENABLED": "false",
        "ARBOR_SERVICE__SHUTDOWN_TIMEOUT": "20",
        "ARBOR_LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "arbor.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", proc, tmp_path / "home"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def _chat(base: str, *, stream: bool) -> tuple[int, str]:
    body = {
        "model": "chat:mock-1",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
    }
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with (
        httpx.Client(timeout=30.0) as client,
        client.stream("POST", f"{base}/v1/chat/completions", json=body, headers=headers) as r,
    ):
        return r.status_code, r.read().decode()


def _requests_seen(upstream: str) -> int:
    with httpx.Client(timeout=10) as client:
        stats = client.get(upstream.removesuffix("/v1") + "/_stats").json()
    return int(stats["requests"])


def _until(condition: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the requests never got under way"
        time.sleep(0.02)


@pytest.mark.slow
def test_serve_drains_in_flight_requests_and_streams_on_sigterm(
    server: tuple[str, subprocess.Popen[str], Path], chat_upstream: str
) -> None:
    base, proc, home = server
    _wait_healthy(base, proc)
    assert httpx.get(f"{base}/readyz", timeout=5).json()["status"] == "ready"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    run = httpx.post(
        f"{base}/v1/runs",
        json={"workflow": "review-loop", "input": {"task": "a haiku"}, "model": "mock:mock-1"},
        headers=headers,
        timeout=10,
    )
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    connected = threading.Event()
    with ThreadPoolExecutor(3) as pool:
        plain = pool.submit(_chat, base, stream=False)
        streamed = pool.submit(_chat, base, stream=True)
        events = pool.submit(_events, base, run_id, connected)
        # All are in flight: both chats wait on their upstream (1.5 s), the stream is open.
        _until(lambda: _requests_seen(chat_upstream) >= 2)
        assert connected.wait(30), "the event stream never opened"
        sent_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # A run's event stream follows the run for as long as it lasts: shutdown ends it.
        status, text = events.result(timeout=30)
        assert status == 200 and "event: run_started" in text, text
        status, text = plain.result(timeout=30)
        assert status == 200, text
        assert '"chat.completion"' in text.replace(" ", "")
        status, text = streamed.result(timeout=30)
        assert status == 200, text
        assert text.rstrip().endswith("data: [DONE]")
        assert text.count("chat.completion.chunk") >= 6
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - sent_at < 20
    assert proc.stdout is not None
    log = proc.stdout.read()
    assert "Shutting down" in log and ADMIN not in log
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz", timeout=1.0)
    # The interrupted run was left to resume on the next start, not marked cancelled.
    assert asyncio.run(_run_status(home / "arbor.db", run_id)) in ("pending", "running")


def _events(base: str, run_id: str, connected: threading.Event) -> tuple[int, str]:
    """The run's SSE stream until the server ends it: sse-starlette cuts the connection when
    the server shuts down (clients reconnect with Last-Event-ID), so the body may end
    without the final chunk. ``connected`` is set once the response has begun."""
    headers = {"Authorization": f"Bearer {ADMIN}"}
    received: list[str] = []
    with (
        httpx.Client(timeout=30.0) as client,
        client.stream("GET", f"{base}/v1/runs/{run_id}/events", headers=headers) as r,
    ):
        connected.set()
        try:
            for text in r.iter_text():
                received.append(text)
        except httpx.RemoteProtocolError:
            pass
        return r.status_code, "".join(received)


async def _run_status(path: Path, run_id: str) -> str:
    async with Database(f"sqlite+aiosqlite:///{path}") as db:
        return (await RunRepository(db).get(run_id)).status


def test_serve_refuses_a_bad_setting_with_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ARBOR_HOME": str(tmp_path),
        "ARBOR_ADMIN_KEY": "short",
        "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "arbor.cli", "serve", "--port", str(_free_port())]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "ARBOR_ADMIN_KEY" in done.stderr and "Traceback" not in done.stderr
    assert "short" not in done.stderr


def test_serve_on_a_busy_port_exits_1_with_a_reason(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ARBOR_HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
    }
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cmd = [sys.executable, "-m", "arbor.cli", "serve", "--port", str(port)]
        done = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1, done.stderr
    assert f"could not serve on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


async def test_first_start_saves_one_admin_key_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    from arbor.cli.serve import first_admin_key
    from arbor.store import Database, migrate
    from arbor.store.keys import KeyRepository

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    await migrate(db)
    try:
        keys = KeyRepository(db)
        saved = await first_admin_key(keys, tmp_path / "home")
        assert saved == tmp_path / "home" / "admin.key"
        assert saved.stat().st_mode & 0o777 == 0o600
        secret = saved.read_text().strip()
        records = await keys.list()
        assert len(records) == 1 and records[0].is_admin
        assert (await keys.verify(secret)).id == records[0].id
        # Keys exist now: a second start creates nothing and leaves the file alone.
        assert await first_admin_key(keys, tmp_path / "home") is None
        assert len(await keys.list()) == 1 and saved.read_text().strip() == secret
    finally:
        await db.dispose()


def test_settle_heap_freezes_startup_objects_and_collects_young_objects_less_often() -> None:
    import gc

    from arbor.cli.serve import settle_heap

    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 10_000  # this test process's imports, at least
        assert gc.get_threshold()[0] > before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert gc.get_freeze_count() == 0
