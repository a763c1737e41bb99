"""Everything a request handler needs, built once per app and passed in — never a global.

:func:`open_context` opens the database (migrated to head), an :class:`LLMClient` whose usage
lands in that database, the key repository (storing the ``ARBOR_ADMIN_KEY`` bootstrap key),
the durable checkpoint store and the metrics registry. With ``ARBOR_REDIS_URL`` set, the
client's limits, breakers and cache are shared through Redis and run events fan out to the
other replicas' watchers (:class:`~arbor.agents.workflow._redis_hub.RedisEventHub`).
Two apps with two contexts can live in one process (tests do that).
:meth:`ServiceContext.aclose` stops runs first (they stay resumable), then flushes usage,
then closes the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from arbor.agents.workflow._redis_hub import RedisEventHub
from arbor.agents.workflow.events import EventHub
from arbor.agents.workflow.registry import WorkflowFactory, WorkflowRegistry
from arbor.agents.workflow.sql import SQLCheckpointStore
from arbor.core.config import Settings
from arbor.core.errors import ConfigError
from arbor.core.logging import Redactor
from arbor.core.metrics import Metrics
from arbor.llm.client import LLMClient
from arbor.llm.model import Model
from arbor.llm.redis_backends import build_client, connect_redis, key_sharing
from arbor.llm.usage import StoreUsageSink
from arbor.runtime.batch_manager import BatchManager
from arbor.runtime.runs import RunManager
from arbor.service.auth import Authenticator
from arbor.service.http_metrics import HTTPMetrics
from arbor.store import Database, KeyRepository, UsageRepository, migrate

__all__ = ["ServiceContext", "open_context"]

log = structlog.get_logger("arbor.service")


@dataclass(kw_only=True)
class ServiceContext:
    """The service's long-lived parts; handlers reach it through ``deps.Ctx``."""

    settings: Settings
    db: Database
    client: LLMClient
    keys: KeyRepository
    checkpoints: SQLCheckpointStore
    metrics: Metrics
    auth: Authenticator
    #: Scrubs secrets (configured keys and anything key-shaped) from error details.
    redactor: Redactor = field(default_factory=Redactor)
    runs: RunManager | None = None
    #: Drives batches in the background and joins those other processes run.
    batches: BatchManager | None = None
    #: Request counts and latencies on ``metrics``' registry (made from it when not given).
    http_metrics: HTTPMetrics | None = None
    _closed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.http_metrics is None:
            self.http_metrics = HTTPMetrics(self.metrics)

    async def aclose(self) -> None:
        """Stop runs (resumable), flush usage records, close the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.batches is not None:
                await self.batches.aclose()
            if self.runs is not None:
                await self.runs.aclose()
        finally:
            try:
                await self.client.aclose()
            finally:
                await self.db.dispose()


async def open_context(
    settings: Settings,
    *,
    models: Mapping[str, Model] | None = None,
    workflows: WorkflowRegistry | Mapping[str, WorkflowFactory] | None = None,
) -> ServiceContext:
    """Open the service's parts from ``settings``; ``workflows`` is the registry runs and
    batches start workflows from (default: every installed ``arbor.workflows`` entry point;
    a mapping adds factories to those); ``models`` serves model ids with given
    :class:`Model` objects (tests pass ScriptedModel/FunctionModel doubles)."""
    db = Database.from_settings(settings)
    client: LLMClient | None = None
    try:
        await migrate(db)
        metrics = Metrics()
        usage = UsageRepository(db)
        client = await build_client(
            settings, models=models, metrics=metrics, usage_sink=StoreUsageSink(usage)
        )
        hub = await _event_hub(settings, client)
        keys = KeyRepository(db)
        secrets = _secrets(settings)
        if settings.admin_key is not None:
            try:
                boot = await keys.ensure_bootstrap(settings.admin_key.get_secret_value())
            except ValueError as exc:
                raise ConfigError(str(exc), variable="ARBOR_ADMIN_KEY") from None
            status = boot.status()
            if status != "active" or not boot.is_admin:
                # An admin revoked it, or it names an ordinary key: respect that, but say so.
                log.warning("keys.bootstrap_key_not_admin", key_id=boot.id, status=status)
            else:
                log.info("keys.bootstrap_admin_key_ready", key_id=boot.id)
    except BaseException:
        if client is not None:
            await client.aclose()
        await db.dispose()
        raise
    checkpoints = SQLCheckpointStore(db, hub=hub)  # one store (one hub) for runs and handlers
    runs = RunManager(
        checkpoints,
        client,
        workflows=workflows,
        lease_seconds=settings.service.run_lease_seconds,
        sweep_seconds=settings.service.run_sweep_seconds,
    )
    try:  # refuses an executor this build does not have
        batches = BatchManager(db, settings, models=models, workflows=runs.workflows)
    except BaseException:
        await client.aclose()
        await db.dispose()
        raise
    return ServiceContext(
        settings=settings,
        db=db,
        client=client,
        keys=keys,
        checkpoints=checkpoints,
        metrics=metrics,
        auth=Authenticator(
            keys,
            client,
            usage,
            cache_seconds=settings.service.key_cache_seconds,
            sharing=key_sharing(settings, client),
        ),
        redactor=Redactor(secrets),
        runs=runs,
        batches=batches,
    )


async def _event_hub(settings: Settings, client: LLMClient) -> EventHub:
    """In-process, or fanned out through Redis; closed with the client (after the runs)."""
    if not settings.redis_url:
        return EventHub()
    redis = connect_redis(settings.redis_url)
    hub = RedisEventHub(redis)
    client.on_close(redis.aclose)
    client.on_close(hub.aclose)  # runs first
    await hub.start()
    return hub


def _secrets(settings: Settings) -> list[str]:
    values = [settings.openai_api_key, settings.admin_key, settings.service.session_secret]
    values += [p.api_key for p in settings.providers.values()]
    return [v.get_secret_value() for v in values if v is not None]
