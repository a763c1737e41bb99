"""The Ray executor: a batch's items driven by Ray actors, on one machine or a cluster.

:class:`RayExecutor` offers what the local executor offers its callers (``run``, ``stop``,
``progress``). It connects to the cluster at ``settings.ray_address`` (``ray.init(address=
...)``; with no address, Ray's own choice: the cluster started on this machine by ``ray
start --head`` if there is one, else a new one-machine cluster in this process) and starts
``actors`` async actors, named after the batch (``arbor-batch-<id>-<n>`` in namespace
``arbor``) so every process driving the batch — two ``arbor serve`` on one database, each
with ``ARBOR_EXECUTOR=ray`` — attaches to the same actors instead of starting more.

Each actor opens its own store and LLM client from the settings it was given (the database
and Redis URLs travel inside the pickled :class:`~arbor.core.config.Settings`, never in
logs) and runs the batch with the :class:`~arbor.runtime.executor.LocalExecutor` — the same
leased claims, one result per item in its own transaction, retries and budget pauses. Every
actor paces its requests at ``1/actors`` of the batch's rpm and runs ``1/actors`` of its
concurrency; the rpm/tpm limits themselves are shared through Redis (``ARBOR_REDIS_URL``),
so all actors together stay under them. Without Redis, limits cannot be shared between
machines: a multi-node cluster is refused unless there is exactly one actor.

The driver waits for the actors, follows the progress in the store (what the CLI's bar
shows), starts a new actor in place of one that died (its items come back when their leases
expire) and stops cleanly: ``stop`` stops the actors' executors (``cancelled`` also stops
their items in flight); an actor releases the leases it still holds when its executor ends,
and the actors of a batch that ended are killed.

Ray is an optional extra: it is imported only here, inside functions; without it
``ARBOR_EXECUTOR=ray`` fails with "install arbor[ray]".
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from arbor.agents.workflow.graph import Workflow
from arbor.agents.workflow.registry import WorkflowRegistry
from arbor.core.config import Settings
from arbor.core.errors import ConfigError
from arbor.core.ids import new_owner
from arbor.runtime.executor import LiveProgress, StopReason
from arbor.runtime.spec import BatchSpec
from arbor.store.batches import BATCH_ACTIVE, BATCH_RUNNABLE, BatchRecord, BatchRepository

if TYPE_CHECKING:
    from arbor.agents.tools import Tool
    from arbor.llm.client import LLMClient
    from arbor.llm.model import Model
    from arbor.runtime.batches import BatchService, WorkflowResolver
    from arbor.runtime.executor import LocalExecutor

__all__ = ["DEFAULT_ACTORS", "RayExecutor", "connect", "executor_factory", "require_ray"]

log = structlog.get_logger("arbor.runtime.ray")

#: Actors per batch unless told otherwise.
DEFAULT_ACTORS = 2
#: The Ray namespace the named batch actors live in (shared by every driver).
NAMESPACE = "arbor"
#: How often the driver reads the batch's progress from the store.
_PROGRESS_EVERY = 0.5
#: How many times an actor that died is replaced before the driver gives up.
_MAX_RESTARTS = 5


def require_ray() -> Any:
    """The ``ray`` module, or ConfigError telling how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the Ray executor needs Ray, which is not installed: install arbor[ray] "
            "(pip install 'arbor[ray]') or use the local executor",
            variable="ARBOR_EXECUTOR",
        ) from None
    return ray


def connect(settings: Settings) -> Any:
    """Join the cluster at ``settings.ray_address`` (a local one-machine cluster when no
    address is set), once per process; returns the ``ray`` module."""
    ray = require_ray()
    if not ray.is_initialized():
        options: dict[str, Any] = {"log_to_driver": False, "ignore_reinit_error": True}
        if settings.ray_address:
            ray.init(address=settings.ray_address, **options)
        else:  # "local": a new cluster even when one started on this machine is running
            ray.init(address="local", include_dashboard=False, **options)
    return ray


def check_shared_limits(settings: Settings, nodes: int, actors: int) -> None:
    """Refuse several actors on several machines when no Redis shares the rate limits, and
    a SQLite file (one machine's disk) on several machines."""
    if nodes > 1 and settings.effective_database_url.startswith("sqlite"):
        raise ConfigError(
            f"the Ray cluster has {nodes} nodes but the database is a SQLite file on this "
            "machine: set ARBOR_DATABASE_URL to a PostgreSQL database every node reaches",
            variable="ARBOR_DATABASE_URL",
        )
    if settings.redis_url is None and nodes > 1 and actors > 1:
        raise ConfigError(
            f"the Ray cluster has {nodes} nodes and the batch would run {actors} actors, "
            "but their rate limits cannot be shared without Redis: set ARBOR_REDIS_URL "
            "(or run one actor)",
            variable="ARBOR_REDIS_URL",
        )


class BatchWorker:
    """The body of one Ray actor: runs batches with a LocalExecutor on its own store and
    client. A second ``run`` of a batch already running here waits for the first."""

    def __init__(
        self,
        settings: Settings,
        models: Mapping[str, Model] | None = None,
        workflows: WorkflowResolver | None = None,
        tools: Mapping[str, Tool] | None = None,
    ) -> None:
        self.settings = settings
        self.models, self.workflows, self.tools = models, workflows, tools
        self.owner = new_owner()
        self._runs: dict[str, asyncio.Task[int]] = {}
        self._executors: dict[str, LocalExecutor] = {}

    def name(self) -> str:
        """The lease owner this actor writes its results under."""
        return self.owner

    async def run(self, batch_id: str, share: float) -> int:
        """Drive the batch until it ends here; returns how many items this actor finished."""
        task = self._runs.get(batch_id)
        if task is None or task.done():
            task = asyncio.create_task(self._run(batch_id, share))
            self._runs[batch_id] = task
        return await asyncio.shield(task)

    def stop(self, batch_id: str, reason: StopReason) -> None:
        executor = self._executors.get(batch_id)
        if executor is not None:
            executor.stop(reason)

    async def _run(self, batch_id: str, share: float) -> int:
        from arbor.runtime.batches import BatchService
        from arbor.store import Database

        db = Database.from_settings(self.settings)
        try:
            service = BatchService(
                db, self.settings, models=self.models, workflows=self.workflows, tools=self.tools
            )
            async with service.open_client(batch_id, share=share) as opened:
                key_id = BatchSpec.model_validate((await service.repo.get(batch_id)).spec).key_id
                # Calls of a batch created with an API key count against that key, as they
                # do when a server drives the batch itself.
                client = opened.view(key_id=key_id)
                executor = await service.executor(batch_id, client)
                executor.owner = self.owner
                concurrency = max(1, math.ceil(executor.options.concurrency * share))
                executor.options = executor.options.model_copy(update={"concurrency": concurrency})
                self._executors[batch_id] = executor
                try:
                    await executor.run()
                finally:
                    self._executors.pop(batch_id, None)
                    await _release_held(service.repo, batch_id, self.owner)
                return executor.progress.finished_here
        finally:
            await db.dispose()


async def _release_held(repo: BatchRepository, batch_id: str, owner: str) -> None:
    """Hand back the items ``owner`` still holds (stopped in flight), so other executors
    take them at once instead of waiting for their leases to expire."""
    try:
        for item in await repo.items(batch_id, status="running", limit=100_000):
            if item.lease_owner == owner:
                await repo.release(batch_id, item.item, owner, error=None, uncount=False)
    except Exception:
        log.warning("batch.release_failed", batch_id=batch_id, exc_info=True)


class RayExecutor:
    """Drives one batch with ``actors`` Ray actors until it ends, pauses or is cancelled."""

    def __init__(
        self,
        settings: Settings,
        repo: BatchRepository,
        batch_id: str,
        *,
        actors: int = DEFAULT_ACTORS,
        models: Mapping[str, Model] | None = None,
        workflows: WorkflowResolver | None = None,
        tools: Mapping[str, Tool] | None = None,
    ) -> None:
        if actors < 1:
            raise ValueError("actors must be >= 1")
        self.settings = settings
        self.repo = repo
        self.batch_id = batch_id
        self.actors = actors
        self._worker_args = (settings, models, workflows, tools)
        self.progress = LiveProgress()
        self.stop_reason: StopReason | None = None
        self.handles: list[Any] = []
        #: Items each actor reported finishing (by lease owner), for the curious.
        self.finished_by: dict[str, int] = {}
        self._done_at_start = 0

    def stop(self, reason: StopReason) -> None:
        """Stop the actors' executors (``cancelled``: their items in flight too)."""
        if self.stop_reason is None or reason == "cancelled":
            self.stop_reason = reason
        for handle in self.handles:
            handle.stop.remote(self.batch_id, reason)

    def _actor(self, ray: Any, index: int) -> Any:
        worker = ray.remote(BatchWorker).options(
            name=f"arbor-batch-{self.batch_id}-{index}",
            namespace=NAMESPACE,
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=64,
            scheduling_strategy="SPREAD",
        )
        return worker.remote(*self._worker_args)

    async def run(self) -> BatchRecord:
        record = await self.repo.get(self.batch_id, progress=True)
        if record.status not in BATCH_RUNNABLE:  # ended, or paused until a resume
            return record
        ray = await asyncio.to_thread(connect, self.settings)
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        check_shared_limits(self.settings, nodes, self.actors)
        self._read(record)
        self._done_at_start = self.progress.done
        self.handles = [self._actor(ray, i) for i in range(self.actors)]
        watcher = asyncio.create_task(self._watch(), name=f"ray-progress:{self.batch_id}")
        try:
            await self._drive(ray)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        final = await self.repo.get(self.batch_id, progress=True)
        self._read(final)
        log.info("batch.ray_finished", batch_id=self.batch_id, finished_by=self.finished_by)
        if final.status not in BATCH_ACTIVE or (
            final.progress is not None and final.progress.remaining == 0
        ):
            for handle in self.handles:  # the batch ended: free the cluster
                ray.kill(handle)
        return final

    async def _drive(self, ray: Any) -> None:
        share = 1.0 / self.actors
        restarts = 0
        while self.stop_reason is None:
            refs = [h.run.remote(self.batch_id, share) for h in self.handles]
            names = [h.name.remote() for h in self.handles]
            results = await asyncio.gather(*refs, return_exceptions=True)
            owners = await asyncio.gather(*names, return_exceptions=True)
            died = False
            for i, result in enumerate(results):
                if isinstance(result, ray.exceptions.RayActorError):
                    died = True
                    log.warning("batch.ray_actor_died", batch_id=self.batch_id, actor=i)
                    self.handles[i] = self._actor(ray, i)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    owner = owners[i]
                    if isinstance(owner, str):
                        self.finished_by[owner] = self.finished_by.get(owner, 0) + result
            record = await self.repo.get(self.batch_id, progress=True)
            if record.status not in BATCH_ACTIVE or record.status == "paused":
                return
            if record.progress is not None and record.progress.remaining == 0:
                return  # every item has its result
            # Items are left: an actor died, or another driver of the batch (a server
            # shutting down) stopped the shared actors. Run them again.
            if died:
                restarts += 1
                if restarts > _MAX_RESTARTS:
                    raise RuntimeError(
                        f"batch {self.batch_id}: Ray actors died {restarts} times; giving "
                        "up (see the Ray logs)"
                    )
            await asyncio.sleep(_PROGRESS_EVERY)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(_PROGRESS_EVERY)
            try:
                self._read(await self.repo.get(self.batch_id, progress=True))
            except Exception:  # the database hiccuped: the next read tries again
                log.warning("batch.progress_read_failed", batch_id=self.batch_id, exc_info=True)

    def _read(self, record: BatchRecord) -> None:
        live = record.progress
        if live is None:
            return
        p = self.progress
        p.take(live)
        p.finished_here = max(0, p.done - self._done_at_start)


async def executor_factory(
    service: BatchService, batch_id: str, client: LLMClient, owner: str
) -> RayExecutor:
    """The service's executor seam (:func:`arbor.runtime.batch_manager.executor_for`): a Ray
    driver for the batch. The actors build their own clients, so ``client`` and ``owner``
    (the server's) are not used by them."""
    del client, owner
    require_ray()
    workflows = _portable(service.workflows)
    if workflows is None:  # e.g. a server's resolver, bound to its run manager
        spec = BatchSpec.model_validate((await service.repo.get(batch_id)).spec)
        if spec.kind == "workflow":  # build it here: the built workflow travels
            built = service.workflows(spec.target, spec.model)
            workflows = _portable(OneWorkflow(spec.target, built))
        if workflows is None:
            log.warning("batch.ray_not_portable", what="workflows", using="installed")
    return RayExecutor(
        service.settings,
        service.repo,
        batch_id,
        models=_portable(service.models or None),
        workflows=workflows,
        tools=_portable(service.tools or None),
    )


class OneWorkflow:
    """A workflow resolver the actors can receive: ``name`` is the workflow the driver
    built, any other name an installed one."""

    def __init__(self, name: str, workflow: Workflow[Any]) -> None:
        self.name, self.workflow = name, workflow

    def __call__(self, name: str, model: str | None) -> Workflow[Any]:
        if name == self.name:
            return self.workflow
        return WorkflowRegistry().get(name, model)


def _portable(value: Any) -> Any:
    """``value`` when it can travel to the actors (pickled), else None: the actors then
    use the installed workflows, the configured models and no tools."""
    if value is None:
        return None
    ray = require_ray()
    try:
        ray.cloudpickle.dumps(value)
    except Exception:
        return None
    return value
