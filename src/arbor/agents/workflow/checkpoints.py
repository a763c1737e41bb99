"""Where a workflow run's progress lives: the interface the runner needs, and an in-memory
implementation for tests and one-shot runs.

A checkpoint is written after every node, in one transaction: the keys the node changed
(a delta, so storage grows linearly with steps), the scheduler's position, and the node's
events. Completed LLM calls and tool side effects are recorded under idempotency keys as
soon as they finish, so a run killed mid-node replays them instead of repeating them.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from arbor.agents.workflow.events import EventHub, RunEvent, watch_events
from arbor.core.errors import NotFoundError, WorkflowError
from arbor.core.ids import new_id

__all__ = ["CheckpointStore", "InMemoryCheckpointStore", "RunEvent", "StoredRun"]


@dataclass(slots=True)
class StoredRun:
    id: str
    workflow: str
    status: str
    input: dict[str, Any]
    #: The state folded from every checkpoint's delta (includes the scheduler's position).
    state: dict[str, Any]
    output: dict[str, Any] | None = None
    error: str | None = None


class CheckpointStore(Protocol):
    async def create_run(self, workflow: str, input: dict[str, Any]) -> str: ...

    async def load(self, run_id: str) -> StoredRun: ...

    async def checkpoint(
        self, run_id: str, node: str, delta: dict[str, Any], events: list[RunEvent]
    ) -> None: ...

    async def set_status(
        self,
        run_id: str,
        status: str,
        *,
        output: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None: ...

    async def append_event(self, run_id: str, event: RunEvent) -> None: ...

    async def events(self, run_id: str, after_seq: int = 0) -> list[RunEvent]: ...

    def watch(
        self, run_id: str, after_seq: int = 0, *, follow: bool = True
    ) -> AsyncIterator[RunEvent]:
        """Stored events after ``after_seq``, then (``follow``) live ones until the run ends;
        see :func:`~arbor.agents.workflow.events.watch_events`."""
        ...

    async def status(self, run_id: str) -> str: ...

    async def get_idempotent(self, run_id: str, key: str) -> tuple[bool, Any]: ...

    async def record_idempotent(self, run_id: str, key: str, value: Any) -> None: ...

    async def request_approval(self, run_id: str, node: str, visit: int = 1) -> None:
        """Ask for a decision on this ``visit`` of approval node ``node`` (once per visit)."""
        ...

    async def decide_approval(
        self, run_id: str, node: str, approved: bool, reason: str = "", by: str = ""
    ) -> None:
        """Decide the newest pending approval of ``node`` (whatever its visit)."""
        ...

    async def approval(self, run_id: str, node: str, visit: int = 1) -> tuple[bool, str] | None:
        """The decision for that visit, None while undecided."""
        ...


@dataclass
class _Run:
    stored: StoredRun
    deltas: list[dict[str, Any]] = field(default_factory=list)
    events: list[RunEvent] = field(default_factory=list)
    done: dict[str, Any] = field(default_factory=dict)
    #: (node, visit) → the decision, None while pending; in the order asked.
    approvals: dict[tuple[str, int], tuple[bool, str] | None] = field(default_factory=dict)


class InMemoryCheckpointStore:
    """Keeps runs in a dict: the same semantics as the database store, minus durability."""

    def __init__(self, *, hub: EventHub | None = None, poll_interval: float = 1.0) -> None:
        self._runs: dict[str, _Run] = {}
        self.hub = hub or EventHub()
        self.poll_interval = poll_interval

    def _get(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise NotFoundError(f"run {run_id!r} not found")
        return run

    async def create_run(self, workflow: str, input: dict[str, Any]) -> str:
        run_id = new_id("run")
        self._runs[run_id] = _Run(StoredRun(run_id, workflow, "pending", input, dict(input)))
        return run_id

    async def load(self, run_id: str) -> StoredRun:
        stored = self._get(run_id).stored
        return dataclasses.replace(stored, state=dict(stored.state), input=dict(stored.input))

    async def checkpoint(
        self, run_id: str, node: str, delta: dict[str, Any], events: list[RunEvent]
    ) -> None:
        # The runner hands over freshly dumped JSON data it never touches again, so the
        # delta is kept as is (a deep copy here was most of a node's overhead).
        run = self._get(run_id)
        run.deltas.append(delta)
        run.stored.state.update(delta)
        for event in events:
            await self.append_event(run_id, event)

    async def set_status(
        self,
        run_id: str,
        status: str,
        *,
        output: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        stored = self._get(run_id).stored
        stored.status = status
        stored.output = output if output is not None else stored.output
        stored.error = error

    async def append_event(self, run_id: str, event: RunEvent) -> None:
        run = self._get(run_id)
        event.seq = len(run.events) + 1
        run.events.append(event)
        self.hub.publish(run_id, (event,))

    async def events(self, run_id: str, after_seq: int = 0) -> list[RunEvent]:
        return self._get(run_id).events[max(after_seq, 0) :]  # seq n is at index n - 1

    def watch(
        self, run_id: str, after_seq: int = 0, *, follow: bool = True
    ) -> AsyncIterator[RunEvent]:
        return watch_events(
            self, self.hub, run_id, after_seq, follow=follow, poll_interval=self.poll_interval
        )

    async def status(self, run_id: str) -> str:
        return self._get(run_id).stored.status

    async def get_idempotent(self, run_id: str, key: str) -> tuple[bool, Any]:
        done = self._get(run_id).done
        return (True, copy.deepcopy(done[key])) if key in done else (False, None)

    async def record_idempotent(self, run_id: str, key: str, value: Any) -> None:
        self._get(run_id).done.setdefault(key, copy.deepcopy(value))

    async def request_approval(self, run_id: str, node: str, visit: int = 1) -> None:
        run = self._get(run_id)
        run.approvals.setdefault((node, visit), None)
        run.stored.status = "waiting_approval"

    async def decide_approval(
        self, run_id: str, node: str, approved: bool, reason: str = "", by: str = ""
    ) -> None:
        approvals = self._get(run_id).approvals
        asked = [key for key in approvals if key[0] == node]
        key = asked[-1] if asked else (node, 1)
        if approvals.get(key) is not None:
            raise WorkflowError(f"approval of node {node!r} was already decided", run_id=run_id)
        approvals[key] = (approved, reason)

    async def approval(self, run_id: str, node: str, visit: int = 1) -> tuple[bool, str] | None:
        return self._get(run_id).approvals.get((node, visit))

    def delta_count(self, run_id: str) -> int:
        return len(self._get(run_id).deltas)
