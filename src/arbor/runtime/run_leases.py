"""Keeping a run's lease while this process drives it (see :mod:`arbor.store.run_leases`).

A :class:`LeaseKeeper` renews the lease every third of its length while the run's task
works. It stops the task when the lease is gone: another process cancelled the run (or it
ended), or this process stalled past the lease's end and another one took the run over. It is
also a node plugin: before each node it checks the run's stored status, so a cancel made by
another server stops the run at its next step, not only at the next renewal.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from pydantic import BaseModel

from arbor.agents.workflow.context import NodeContext
from arbor.agents.workflow.sql import SQLCheckpointStore
from arbor.store.run_leases import RunLeases
from arbor.store.runs import TERMINAL_STATUSES

__all__ = ["LeaseKeeper"]

log = structlog.get_logger("arbor.runtime.runs")


class LeaseKeeper:
    """Renews one run's lease for ``owner`` until :meth:`stop`; cancels ``task`` (the one
    driving the run) when the lease is lost."""

    def __init__(
        self,
        leases: RunLeases,
        store: SQLCheckpointStore,
        run_id: str,
        owner: str,
        seconds: float,
    ) -> None:
        self.leases = leases
        self.store = store
        self.run_id = run_id
        self.owner = owner
        self.seconds = seconds
        self.lost = False
        self._task: asyncio.Task[Any] | None = None
        self._renewer: asyncio.Task[None] | None = None

    def start(self, task: asyncio.Task[Any]) -> None:
        """Guard ``task`` (the run's driver) from now on."""
        self._task = task
        self._renewer = asyncio.create_task(self._renew(), name=f"lease:{self.run_id}")

    async def stop(self) -> None:
        """Stop renewing and release the lease (if still ours). Safe to call while the
        driving task is being cancelled."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        try:
            await self.leases.release(self.run_id, self.owner)
        except Exception:  # the lease then simply expires
            log.warning("run.lease_release_failed", run_id=self.run_id, exc_info=True)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                held = await self.leases.renew(self.run_id, self.owner, self.seconds)
            except Exception:  # the database hiccuped: try again at the next tick
                log.warning("run.lease_renew_failed", run_id=self.run_id, exc_info=True)
                continue
            if not held:
                self._lose("lease lost or run ended elsewhere")
                if self._task is not None and not self._task.done():
                    self._task.cancel()
                return

    def _lose(self, why: str) -> None:
        self.lost = True
        log.warning("run.lease_lost", run_id=self.run_id, owner=self.owner, reason=why)

    # ---- node plugin --------------------------------------------------------------------
    async def before_node(self, ctx: NodeContext, state: BaseModel) -> None:
        """Stop before a node if the lease is gone or the run was finished elsewhere."""
        if not self.lost:
            status = await self.store.status(self.run_id)
            if status not in TERMINAL_STATUSES:
                return
            self._lose(f"run is {status}")
        # Raised here, the driving task ends cancelled; a node of a parallel wave runs in a
        # child task, whose parent must be cancelled too (a child's cancel alone does not
        # stop the wave). A cancel request on the task itself would also hit its clean-up.
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
        raise asyncio.CancelledError

    async def after_node(
        self, ctx: NodeContext, state: BaseModel, delta: dict[str, Any]
    ) -> dict[str, Any]:
        return delta
