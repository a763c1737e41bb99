"""The one fold of a run's events into node progress, shared by the API and the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime

from arbor.service.progress import NodeProgress, node_progress
from arbor.store import EventRecord

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _event(seq: int, type_: str, node: str | None) -> EventRecord:
    return EventRecord(
        id=f"evt_{seq}", run_id="run_1", seq=seq, type=type_, node=node, data={}, created_at=T0
    )


EVENTS = [
    _event(1, "run_started", None),
    _event(2, "node_started", "draft"),
    _event(3, "node_finished", "draft"),
    _event(4, "node_started", "review"),
    _event(5, "approval_requested", "review"),
    _event(6, "node_started", "draft"),
    _event(7, "node_finished", "draft"),
]


def test_latest_state_and_visits_in_order_of_first_appearance() -> None:
    assert node_progress(EVENTS, "waiting_approval") == [
        NodeProgress("draft", "finished", 2),
        NodeProgress("review", "waiting_approval", 0),
    ]


def test_unfinished_nodes_take_a_failed_or_cancelled_runs_status() -> None:
    started = [*EVENTS, _event(8, "node_started", "publish")]
    assert [(n.name, n.status) for n in node_progress(started, "cancelled")] == [
        ("draft", "finished"),
        ("review", "cancelled"),
        ("publish", "cancelled"),
    ]
    assert node_progress(started, "failed")[2].status == "failed"
    assert node_progress([], "succeeded") == []
