"""The durable checkpoint store: runs, checkpoints, idempotent outputs, events and approvals in
the database (SQLite by default, PostgreSQL by URL), each checkpoint one transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from arbor.agents.workflow.checkpoints import RunEvent, StoredRun
from arbor.agents.workflow.events import EventHub, watch_events
from arbor.store import (
    ApprovalRepository,
    Database,
    EventRecord,
    EventRepository,
    NewEvent,
    RunRepository,
    RunStatus,
)

__all__ = ["SQLCheckpointStore"]

_UNFINISHED: tuple[RunStatus, ...] = ("pending", "running", "waiting_approval")


class SQLCheckpointStore:
    """Implements :class:`~arbor.agents.workflow.checkpoints.CheckpointStore` on the store.

    Each checkpoint is fenced by the sequence number this process last saw, so two processes
    resuming the same run cannot both write: the second gets a WorkflowError.

    Committed events go to ``hub`` (pass a shared one so watchers elsewhere in this process
    wake at once); events from other processes arrive by a poll every ``poll_interval`` s.
    """

    def __init__(
        self, db: Database, *, hub: EventHub | None = None, poll_interval: float = 1.0
    ) -> None:
        self.db = db
        self.hub = hub or EventHub()
        self.poll_interval = poll_interval
        self.runs = RunRepository(db)
        self.event_log = EventRepository(db)
        self.approvals = ApprovalRepository(db)
        self._seq: dict[str, int] = {}

    async def create_run(self, workflow: str, input: dict[str, Any]) -> str:
        return (await self.runs.create(workflow, input)).id

    async def load(self, run_id: str) -> StoredRun:
        run, folded = await self.runs.load_run(run_id)
        self._seq[run_id] = folded.last_seq
        return StoredRun(
            id=run.id,
            workflow=run.workflow,
            status=run.status,
            input=dict(run.input),
            state={**run.input, **folded.state},
            output=run.output,
            error=run.error,
        )

    async def checkpoint(
        self, run_id: str, node: str, delta: dict[str, Any], events: list[RunEvent]
    ) -> None:
        result = await self.runs.checkpoint(
            run_id,
            node,
            delta,
            events=[NewEvent(type=e.type, node=e.node, data=e.data) for e in events],
            expected_seq=self._seq.get(run_id),
        )
        self._seq[run_id] = result.checkpoint.seq
        self._publish(run_id, result.events)

    async def set_status(
        self,
        run_id: str,
        status: str,
        *,
        output: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """The runner's status change; it never revives a finished run: once any process
        cancelled (or finished) the run, a late write by its driver fails (WorkflowError)
        and the stored outcome stays."""
        await self.runs.update(
            run_id,
            status=status,  # type: ignore[arg-type]
            output=output,
            error=error,
            only_from=_UNFINISHED,
        )

    async def append_event(self, run_id: str, event: RunEvent) -> None:
        record = await self.event_log.append(run_id, event.type, node=event.node, data=event.data)
        event.seq = record.seq
        self.hub.publish(run_id, (event,))

    async def events(self, run_id: str, after_seq: int = 0) -> list[RunEvent]:
        return [
            RunEvent(e.type, e.node, e.data, e.seq)
            for e in await self.event_log.list(run_id, after_seq=after_seq, limit=100_000)
        ]

    def watch(
        self, run_id: str, after_seq: int = 0, *, follow: bool = True
    ) -> AsyncIterator[RunEvent]:
        return watch_events(
            self, self.hub, run_id, after_seq, follow=follow, poll_interval=self.poll_interval
        )

    async def status(self, run_id: str) -> str:
        return (await self.runs.get(run_id)).status

    def _publish(self, run_id: str, records: Sequence[EventRecord]) -> None:
        if records and self.hub.watching(run_id):  # no watcher, no work
            self.hub.publish(run_id, [RunEvent(e.type, e.node, e.data, e.seq) for e in records])

    async def get_idempotent(self, run_id: str, key: str) -> tuple[bool, Any]:
        record = await self.runs.get_idempotent(run_id, key)
        return (False, None) if record is None else (True, record.value)

    async def record_idempotent(self, run_id: str, key: str, value: Any) -> None:
        await self.runs.record_idempotent(run_id, key, value)

    async def request_approval(self, run_id: str, node: str, visit: int = 1) -> None:
        if await self.approvals.latest(run_id, node, visit=visit) is None:
            await self.approvals.request(run_id, node, visit=visit)

    async def decide_approval(
        self, run_id: str, node: str, approved: bool, reason: str = "", by: str = ""
    ) -> None:
        """Decide the newest approval asked for ``node`` (whatever its visit); deciding a
        node never asked records a decision for its first visit."""
        latest = await self.approvals.latest(run_id, node)
        if latest is None:
            latest = await self.approvals.request(run_id, node, visit=1)
        await self.approvals.decide(
            latest.id, approved=approved, decided_by=by or "unknown", reason=reason or None
        )

    async def approval(self, run_id: str, node: str, visit: int = 1) -> tuple[bool, str] | None:
        latest = await self.approvals.latest(run_id, node, visit=visit)
        if latest is None or latest.status == "pending":
            return None
        return latest.status == "approved", latest.reason or ""
