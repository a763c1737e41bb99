"""Distributed mode end to end: a local Ray cluster (a head and two worker nodes on loopback),
the mock upstream limited in requests per minute, and TWO ``arbor serve`` processes on ONE
PostgreSQL database sharing limits through Redis with ``ARBOR_EXECUTOR=ray``. A 2,000-item
batch created over the API on one server is run by the batch's Ray actors (the other server
joins the same actors): every item succeeds with exactly one result, and the upstream never
answered 429 (its 1-second windows hold at most rpm/60 requests, so no 429 means no window
went over the limit)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from _ray_cluster import start_cluster

from arbor.store import Database, migrate
from arbor.testing.mock_upstream import spawn_mock_upstream

# One xdist worker runs the Ray modules one after the other (a cluster each, 2 cores).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.xdist_group("ray"),
    # A cluster, two servers and 2,000 items on 2 cores: its deadlines catch hangs. Unloaded
    # the batch takes ~30 s; with two CPU burners beside it the actors took 2.5 min to start
    # and the batch 8 min in all (about 6 items/s).
    pytest.mark.timeout(1200),
]

SRC = str(Path(__file__).resolve().parents[2] / "src")
ADMIN = "distributed-test-admin-key-0123456789abcdef"
ITEMS = 2000
#: The upstream's limit (100 per 1-second window) and the batch's, a little under it.
UPSTREAM_RPM = 6000
BATCH_RPM = 5400


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A head (no CPUs for work) and two worker nodes; the actors use no CPU slots."""
    memory = 80 * 1024 * 1024
    cluster = start_cluster(
        {"num_cpus": 0, "object_store_memory": memory, "include_dashboard": False},
        [{"num_cpus": 1, "object_store_memory": memory}] * 2,
    )
    try:
        yield cluster.address
    finally:
        cluster.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(env: dict[str, str], log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = _free_port()
    cmd = [sys.executable, "-m", "arbor.cli", "serve", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return f"http://127.0.0.1:{port}", proc


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"arbor serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"arbor serve did not become healthy:\n{log.read_text()}")


async def _migrate(url: str) -> None:
    async with Database(url) as db:
        await migrate(db)


def _finished_by(logs: Iterable[Path]) -> dict[str, int]:
    """Items per actor from the first driver's ``batch.ray_finished`` line that has them."""
    for log in logs:
        for line in log.read_text().splitlines():
            if '"batch.ray_finished"' in line:
                counts: dict[str, int] = json.loads(line)["finished_by"]
                if counts:
                    return counts
    return {}


def test_two_servers_and_a_ray_cluster_run_a_batch_under_the_upstreams_limit(
    ray_cluster: str,
    postgres_url: str,
    redis_server_url: str,
    tmp_path: Path,
) -> None:
    asyncio.run(_migrate(postgres_url))
    with spawn_mock_upstream(latency_ms=40, rpm=UPSTREAM_RPM) as upstream:
        env = {
            **os.environ,
            "ARBOR_ADMIN_KEY": ADMIN,
            "ARBOR_DATABASE_URL": postgres_url,
            "ARBOR_REDIS_URL": redis_server_url,
            "ARBOR_EXECUTOR": "ray",
            "ARBOR_RAY_ADDRESS": ray_cluster,
            "ARBOR_PROVIDERS__MOCK__BASE_URL": upstream,
            "ARBOR_PROVIDERS__MOCK__API_KEY": "sk-mock-0000000000",
            "ARBOR_DEFAULT_MODEL": "mock:mock-1",
            "ARBOR_LLM__CACHE__ENABLED": "false",
            "ARBOR_SERVICE__BATCH_POLL_SECONDS": "0.5",
            "ARBOR_LOG_FORMAT": "json",
            "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
        }
        servers: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        try:
            for n in range(2):
                log = tmp_path / f"serve{n}.log"
                base, proc = _serve({**env, "ARBOR_HOME": str(tmp_path / f"home{n}")}, log)
                servers.append((base, proc, log))
            for base, proc, log in servers:
                _wait_healthy(base, proc, log)
            auth = {"Authorization": f"Bearer {ADMIN}"}
            body = {
                "template": "Answer {{ n }}",
                "model": "mock:mock-1",
                "rows": [{"n": i} for i in range(ITEMS)],
                "concurrency": 16,
                "rpm": BATCH_RPM,
                "name": "distributed",
            }
            first = servers[0][0]
            with httpx.Client(timeout=30.0, headers=auth) as http:
                created = http.post(f"{first}/v1/batches", json=body)
                assert created.status_code == 202, created.text
                batch_id = created.json()["id"]
                deadline = time.monotonic() + 900
                status = "pending"
                while time.monotonic() < deadline:
                    status = http.get(f"{first}/v1/batches/{batch_id}").json()["status"]
                    if status not in ("pending", "running"):
                        break
                    time.sleep(1.0)
                logs = "\n".join(log.read_text()[-3000:] for _, _, log in servers)
                assert status == "succeeded", logs
                results = http.get(f"{servers[1][0]}/v1/batches/{batch_id}/results")
                assert results.status_code == 200
            rows = [json.loads(line) for line in results.text.splitlines() if line.strip()]
            assert len(rows) == ITEMS
            assert len({row["item"] for row in rows}) == ITEMS  # one result per item
            assert all(row["status"] == "succeeded" and row["output"] for row in rows)
            stats = httpx.get(upstream.removesuffix("/v1") + "/_stats", timeout=5.0).json()
            assert stats["by_status"].get("429", 0) == 0, stats
            assert stats["by_status"].get("200") == ITEMS
            # The drivers log what each actor (by lease owner) finished once their last round
            # returns, which can come after the batch reads "succeeded" (CI once stopped the
            # servers before it): wait for the line, then both actors must have done work.
            shares: dict[str, int] = {}
            deadline = time.monotonic() + 60
            while not shares and time.monotonic() < deadline:
                shares = _finished_by(log for _, _, log in servers)
                time.sleep(0.5)
            assert len(shares) == 2, (shares, logs)
            assert all(n > 0 for n in shares.values()), shares
            assert sum(shares.values()) <= ITEMS
        finally:
            for _, proc, _ in servers:
                if proc.poll() is None:
                    proc.terminate()
            for _, proc, _ in servers:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
