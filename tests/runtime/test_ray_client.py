"""The Ray executor through the Ray Client (``ARBOR_RAY_ADDRESS=ray://head:10001``, the address
deploy/'s compose file and k8s config map give the servers): against a local cluster (a head
with its client server, no CPUs, and one worker node) every item of a PostgreSQL-stored batch
gets one result, the actors share their limits through Redis, and the actors are gone after."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from arbor.core.config import Settings
from arbor.runtime import BatchService
from arbor.runtime.spec import BatchSpec
from arbor.store import Database, migrate
from arbor.store.batches import NewItem
from arbor.testing.mock_upstream import MockConfig, MockUpstream

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.xdist_group("ray"),  # one worker runs the Ray modules, one cluster at a time
    pytest.mark.timeout(600),  # ~3 min with two CPU burners beside it on 2 cores
    # Ray's in-process head leaves its client server's log file to the garbage collector.
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in.*ray_client_server:pytest.PytestUnraisableExceptionWarning"
    ),
]

MB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def client_address() -> Iterator[str]:
    try:
        from _ray_cluster import start_cluster
    except ImportError:  # required in CI like the other services
        if os.environ.get("ARBOR_REQUIRE_SERVICES") == "1":
            pytest.fail("Ray is required: install arbor[ray] (make deps)")
        pytest.skip("Ray is not installed")
    port = _free_port()
    cluster = start_cluster(
        {
            "num_cpus": 0,
            "object_store_memory": 80 * MB,
            "ray_client_server_port": port,
            "include_dashboard": False,
        },
        [{"num_cpus": 1, "object_store_memory": 80 * MB}],
    )
    try:
        _forget_current_cluster(cluster.address)
        yield f"ray://127.0.0.1:{port}"
    finally:
        import ray

        ray.shutdown()  # the client connection first, then the cluster it talks to
        cluster.shutdown()


def _forget_current_cluster(address: str) -> None:
    """Ray notes the newest local cluster for address-less ``ray.init()`` calls; another
    test's ``ray.init(num_cpus=...)`` must not try to join this one."""
    import ray._private.utils as ray_utils

    path = Path(ray_utils.get_ray_address_file(None))
    try:
        if path.read_text().strip() == address:
            path.unlink()
    except OSError:  # already gone, or another cluster's note
        pass


@pytest.fixture
async def mock() -> AsyncIterator[MockUpstream]:
    server = MockUpstream(MockConfig(port=0, latency_ms=20))
    await server.start()
    yield server
    await server.stop()


async def test_a_batch_through_the_ray_client_gets_one_result_per_item(
    client_address: str,
    postgres_url: str,
    redis_server_url: str,
    mock: MockUpstream,
    tmp_path: Path,
) -> None:
    import ray

    from arbor.runtime.ray_executor import RayExecutor

    provider = f"rc{uuid.uuid4().hex[:8]}"  # limiter keys of its own in the shared Redis
    settings = Settings(
        home=tmp_path,
        database_url=postgres_url,
        redis_url=redis_server_url,
        ray_address=client_address,
        executor="ray",
        default_model=f"{provider}:mock-1",
        providers={provider: {"base_url": mock.url, "api_key": "sk-test"}},  # type: ignore[dict-item]
        llm={"cache": {"enabled": False}},  # type: ignore[arg-type]
    )
    async with Database.from_settings(settings) as db:
        await migrate(db)
        service = BatchService(db, settings)
        spec = BatchSpec.model_validate(
            {
                "kind": "template",
                "template": "Q: {{ q }}",
                "model": f"{provider}:mock-1",
                "options": {"concurrency": 8},
            }
        )
        rows = (NewItem(i, {"q": i}) for i in range(50))
        batch_id = (await service.create_from_items(rows, spec, name="client")).id
        executor = RayExecutor(settings, service.repo, batch_id, actors=2)
        done = await executor.run()
        assert ray.util.client.ray.is_connected()  # it went through the client
        assert done.status == "succeeded"
        items: list[Any] = [item async for item in service.iter_items(batch_id)]
        assert [i.item for i in items] == list(range(50))
        assert all(i.status == "succeeded" and i.output for i in items)
        assert mock.stats.by_status == {"200": 50}  # one upstream call per item
        assert sum(executor.finished_by.values()) == 50
        for handle in executor.handles:  # the batch ended: its actors are gone
            with pytest.raises(ray.exceptions.RayActorError):
                await handle.name.remote()


def test_without_an_address_a_new_local_cluster_is_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not whichever cluster was started last on this machine (Ray's address-less default
    joins the one ``ray start`` or a test noted in /tmp/ray)."""
    import ray

    from arbor.runtime.ray_executor import connect

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    connect(Settings(home=tmp_path))
    connect(Settings(home=tmp_path, ray_address="10.0.0.5:6379"))
    assert [c["address"] for c in calls] == ["local", "10.0.0.5:6379"]
