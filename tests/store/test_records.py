"""Numbering new events, shared by the SQLAlchemy and the direct SQLite write paths."""

from __future__ import annotations

from datetime import UTC, datetime

from arbor.store._records import NewEvent, number_events

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_number_events_counts_from_start_with_fresh_ids() -> None:
    events = [
        NewEvent(type="node_started", node="plan"),
        NewEvent(type="node_finished", node="plan", data={"ok": True}),
    ]
    records = number_events("run_1", events, 7, T0)
    assert [r.seq for r in records] == [7, 8]
    assert [(r.type, r.node, r.data) for r in records] == [
        ("node_started", "plan", {}),
        ("node_finished", "plan", {"ok": True}),
    ]
    assert all(r.run_id == "run_1" and r.created_at == T0 for r in records)
    assert all(r.id.startswith("evt_") for r in records)
    assert records[0].id != records[1].id
    assert number_events("run_1", [], 1, T0) == []
