"""Each node's progress in a run, folded from its events.

The REST run detail and the dashboard's live status block both show it; one fold keeps the
two from disagreeing about what a node is doing (say, after a failure or a loop).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from arbor.store import RunStatus

__all__ = ["NodeProgress", "NodeStatus", "node_progress"]

NodeStatus = Literal["running", "finished", "waiting_approval", "failed", "cancelled"]


class _NodeEvent(Protocol):
    @property
    def node(self) -> str | None: ...

    @property
    def type(self) -> str: ...


@dataclass(slots=True)
class NodeProgress:
    name: str
    status: NodeStatus
    #: Completed visits (loops visit a node more than once).
    visits: int = 0


def node_progress(events: Iterable[_NodeEvent], status: RunStatus) -> list[NodeProgress]:
    """Each node's latest state and completed visits, in order of first appearance; a node
    still running or waiting when the run failed or was cancelled takes the run's status."""
    nodes: dict[str, NodeProgress] = {}
    for e in events:
        if e.node is None:
            continue
        node = nodes.setdefault(e.node, NodeProgress(e.node, "running"))
        if e.type == "node_started":
            node.status = "running"
        elif e.type == "node_finished":
            node.status = "finished"
            node.visits += 1
        elif e.type == "approval_requested":
            node.status = "waiting_approval"
    if status in ("failed", "cancelled"):
        for node in nodes.values():
            if node.status in ("running", "waiting_approval"):
                node.status = status
    return list(nodes.values())
