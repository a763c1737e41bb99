"""RayExecutor on a local one-node Ray (started once for the module): every item gets one
result, and a batch whose actor was killed mid-run is finished by its replacement."""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from arbor.agents.workflow.graph import Workflow
from arbor.agents.workflow.registry import WorkflowRegistry
from arbor.core.config import Settings
from arbor.core.errors import ConfigError, NotFoundError
from arbor.runtime import BatchService
from arbor.runtime.ray_executor import RayExecutor, check_shared_limits, executor_factory
from arbor.runtime.spec import BatchSpec
from arbor.store import Database, UsageRepository, migrate
from arbor.store.batches import NewItem
from arbor.testing.mock_upstream import MockConfig, MockUpstream, spawn_mock_upstream

# One xdist worker runs the Ray modules one after the other (a cluster each, 2 cores).
# Ray starts a process per actor: with two CPU burners beside it on 2 cores, a test here took
# nearly 3 minutes (its deadlines catch hangs, not slowness).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray"), pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(
        address="local",  # a fresh one, never a cluster someone started on this machine
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        namespace="arbor-test",
    )
    yield
    ray.shutdown()


@pytest.fixture
async def mock() -> AsyncIterator[MockUpstream]:
    server = MockUpstream(MockConfig(port=0, latency_ms=20))
    await server.start()
    yield server
    await server.stop()


def _settings(tmp_path: Path, mock: MockUpstream) -> Settings:
    return Settings(
        home=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'arbor.db'}",
        default_model="mock:mock-1",
        providers={"mock": {"base_url": mock.url, "api_key": "sk-test"}},  # type: ignore[dict-item]
        llm={"cache": {"enabled": False}},
    )


async def _batch(
    service: BatchService, n: int, *, key_id: str | None = None, **options: Any
) -> str:
    spec = BatchSpec.model_validate(
        {"kind": "template", "template": "Q: {{ q }}", "model": "mock:mock-1", "options": options}
    )
    spec.key_id = key_id
    record = await service.create_from_items(
        (NewItem(i, {"q": f"question {i}"}) for i in range(n)), spec, name="ray"
    )
    return record.id


async def _until(condition: Callable[[], bool], within: float = 120) -> None:
    """Poll ``condition``; Ray actors (new processes) may take long to start on a loaded
    machine, so the deadline only catches a hang."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _results(service: BatchService, batch_id: str) -> list[Any]:
    return [item async for item in service.iter_items(batch_id)]


async def test_every_item_gets_one_result(
    local_ray: None, mock: MockUpstream, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, mock)
    async with Database.from_settings(settings) as db:
        await migrate(db)
        service = BatchService(db, settings)
        batch_id = await _batch(service, 60, concurrency=8, key_id="key_creator")
        executor = RayExecutor(settings, service.repo, batch_id, actors=2)
        done = await executor.run()
        usage = await UsageRepository(db).records(batch_id=batch_id, limit=100)
        assert len(usage) == 60  # counted against the key that created the batch
        assert {u.key_id for u in usage} == {"key_creator"}
        assert done.status == "succeeded"
        items = await _results(service, batch_id)
        assert [i.item for i in items] == list(range(60))
        assert all(i.status == "succeeded" and i.output for i in items)
        assert mock.stats.by_status.get("200") == 60
        assert sum(executor.finished_by.values()) == 60
        assert executor.progress.succeeded == 60
        for handle in executor.handles:  # the batch ended: its actors are gone
            with pytest.raises(ray.exceptions.RayActorError):
                await handle.name.remote()


async def test_a_killed_actor_is_replaced_and_the_batch_finishes(
    local_ray: None, tmp_path: Path
) -> None:
    slow = MockUpstream(MockConfig(port=0, latency_ms=150))
    await slow.start()
    try:
        settings = _settings(tmp_path, slow)
        async with Database.from_settings(settings) as db:
            await migrate(db)
            service = BatchService(db, settings)
            batch_id = await _batch(service, 40, concurrency=4, lease_seconds=2)
            executor = RayExecutor(settings, service.repo, batch_id, actors=2)
            task = asyncio.create_task(executor.run())
            await _until(lambda: executor.progress.done >= 5)
            ray.kill(executor.handles[0])  # items in flight there stay leased until expiry
            done = await asyncio.wait_for(task, 120)
            assert done.status == "succeeded"
            items = await _results(service, batch_id)
            assert len({i.item for i in items}) == 40
            assert all(i.status == "succeeded" for i in items)
            assert done.progress is not None and done.progress.succeeded == 40
    finally:
        await slow.stop()


def test_several_nodes_without_redis_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ARBOR_DATABASE_URL"):
        check_shared_limits(Settings(home=tmp_path), nodes=2, actors=1)  # SQLite file
    settings = Settings(home=tmp_path, database_url="postgresql+asyncpg://db/arbor")
    with pytest.raises(ConfigError, match="ARBOR_REDIS_URL"):
        check_shared_limits(settings, nodes=3, actors=2)
    check_shared_limits(settings, nodes=3, actors=1)  # one actor: nothing to share
    check_shared_limits(Settings(home=tmp_path), nodes=1, actors=4)  # one machine, paced 1/4
    check_shared_limits(settings.model_copy(update={"redis_url": "redis://x"}), nodes=3, actors=2)


async def test_a_pause_stops_the_actors_and_hands_their_items_back(
    local_ray: None, tmp_path: Path
) -> None:
    slow = MockUpstream(MockConfig(port=0, latency_ms=200))
    await slow.start()
    try:
        settings = _settings(tmp_path, slow)
        async with Database.from_settings(settings) as db:
            await migrate(db)
            service = BatchService(db, settings)
            batch_id = await _batch(service, 200, concurrency=4)
            executor = RayExecutor(settings, service.repo, batch_id, actors=2)
            task = asyncio.create_task(executor.run())
            await _until(lambda: executor.progress.done >= 4)
            await service.pause(batch_id)  # as the CLI or the API does
            done = await asyncio.wait_for(task, 120)
            assert done.status == "paused"
            assert done.progress is not None
            assert done.progress.running == 0  # nothing left leased to the actors
            assert 4 <= done.progress.succeeded < 200
            assert done.progress.pending == 200 - done.progress.succeeded
    finally:
        await slow.stop()


def test_the_cli_runs_a_batch_with_the_ray_executor(tmp_path: Path) -> None:
    """``arbor batch run --executor ray`` in its own process, on a Ray it starts itself."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"q": {i}}}\n' for i in range(20)))
    with spawn_mock_upstream(latency_ms=10) as url:
        env = {
            **os.environ,
            "ARBOR_HOME": str(tmp_path / "home"),
            "ARBOR_PROVIDERS__MOCK__BASE_URL": url,
            "ARBOR_LOG_LEVEL": "warning",
            "RAY_ADDRESS": "local",  # never a cluster someone else started on this machine
        }
        cmd = [sys.executable, "-m", "arbor.cli", "batch", "run", str(data)]
        cmd += ["--template", "Q {{ q }}", "--model", "mock:mock-1", "--executor", "ray"]
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=420, cwd=tmp_path
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch succeeded: 20 succeeded, 0 failed" in done.stdout
    assert "20/20" in done.stderr  # the progress bar, read from the store


async def test_two_drivers_share_the_actors_and_one_stopping_leaves_the_other_finishing(
    local_ray: None, tmp_path: Path
) -> None:
    """Two servers drive one batch: they attach to the same named actors; when one shuts
    down (a local stop, the batch stays running) the other runs the actors again."""
    slow = MockUpstream(MockConfig(port=0, latency_ms=100))
    await slow.start()
    try:
        settings = _settings(tmp_path, slow)
        async with Database.from_settings(settings) as db:
            await migrate(db)
            service = BatchService(db, settings)
            batch_id = await _batch(service, 60, concurrency=4)
            first = RayExecutor(settings, service.repo, batch_id, actors=2)
            second = RayExecutor(settings, service.repo, batch_id, actors=2)
            one = asyncio.create_task(first.run())
            two = asyncio.create_task(second.run())
            await _until(lambda: first.progress.done >= 6)
            # Nothing finishes until the first driver has stopped: the batch cannot end
            # while the second one attaches, however slowly a loaded machine lets it.
            slow.hold()
            await _until(lambda: len(second.handles) == 2)
            assert await first.handles[0].name.remote() == await second.handles[0].name.remote()
            first.stop("cancelled")  # this server shuts down
            stopped = await asyncio.wait_for(one, 60)
            assert stopped.status == "running"
            slow.release()
            done = await asyncio.wait_for(two, 120)
            assert done.status == "succeeded"
            items = await _results(service, batch_id)
            assert len({i.item for i in items}) == 60
            assert all(i.status == "succeeded" for i in items)
            assert slow.stats.by_status.get("200", 0) >= 60
    finally:
        await slow.stop()


class _BoundResolver:
    """Like a server's run manager: its bound method resolves workflows, and it holds
    things that cannot be pickled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def workflow(self, name: str, model: str | None) -> Workflow[Any]:
        if name != "portable":
            raise NotFoundError(f"no workflow named {name!r}")
        return WorkflowRegistry().get("review-loop", model)


async def test_a_resolver_that_cannot_travel_sends_the_built_workflow(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    async with Database.from_settings(settings) as db:
        await migrate(db)
        service = BatchService(db, settings, workflows=_BoundResolver().workflow)
        spec = BatchSpec.model_validate({"kind": "workflow", "workflow": "portable"})
        record = await service.create_from_items([NewItem(0, {"text": "x"})], spec, name="w")
        driver = await executor_factory(service, record.id, None, "owner")  # type: ignore[arg-type]
        workflows = driver._worker_args[2]
        assert workflows is not None
        travelled = pickle.loads(ray.cloudpickle.dumps(workflows))  # what an actor gets
        assert travelled("portable", None).name == "review-loop"
