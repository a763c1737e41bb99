"""Approvals are per visit: a loop through an approval node asks again on every pass, on the
in-memory store and on the database (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from arbor.agents.workflow import (
    END,
    InMemoryCheckpointStore,
    NodeContext,
    Workflow,
    WorkflowRunner,
)
from arbor.agents.workflow.sql import SQLCheckpointStore
from arbor.core.errors import WorkflowError
from arbor.store import ApprovalRepository, Database


class Draft(BaseModel):
    text: str = ""
    drafts: int = 0
    approved: bool | None = None
    approval_reason: str = ""


def review_gate() -> Workflow[Draft]:
    wf = Workflow("gate-loop", Draft)

    async def draft(state: Draft, ctx: NodeContext) -> dict[str, Any]:
        return {"text": f"draft {state.drafts + 1}", "drafts": state.drafts + 1}

    wf.add_node("draft", draft, max_visits=3)
    wf.add_approval("sign_off", prompt="Publish this draft?", max_visits=3)
    wf.edge("draft", "sign_off")
    wf.route("sign_off", lambda s: END if s.approved else "draft", [END, "draft"])
    return wf


async def _two_visits(store: Any) -> None:
    runner = WorkflowRunner(review_gate(), store)
    first = await runner.start({})
    assert first.status == "waiting_approval" and first.state.drafts == 1
    await store.decide_approval(first.run_id, "sign_off", False, "too short", by="ann")
    second = await runner.resume(first.run_id)
    # The second pass does not reuse the first rejection: it waits for its own decision.
    assert second.status == "waiting_approval", second.error
    assert (second.state.drafts, second.state.approval_reason) == (2, "too short")
    again = await runner.resume(first.run_id)  # still undecided: still waiting, asked once
    assert again.status == "waiting_approval"
    await store.decide_approval(first.run_id, "sign_off", True, "ship it", by="bob")
    final = await runner.resume(first.run_id)
    assert final.status == "succeeded", final.error
    assert (final.state.text, final.state.approved, final.state.approval_reason) == (
        "draft 2",
        True,
        "ship it",
    )
    events = await store.events(first.run_id)
    asked = [e.data["visit"] for e in events if e.type == "approval_requested"]
    decided = [
        (e.data["visit"], e.data["approved"]) for e in events if e.type == "approval_decided"
    ]
    assert asked == [1, 2, 2] and decided == [(1, False), (2, True)]
    with pytest.raises(WorkflowError):
        await store.decide_approval(first.run_id, "sign_off", True)  # both visits are decided


async def test_loop_asks_on_every_visit_in_memory() -> None:
    await _two_visits(InMemoryCheckpointStore())


async def test_loop_asks_on_every_visit_in_the_database(db: Database) -> None:
    store = SQLCheckpointStore(db)
    await _two_visits(store)
    [run_id] = {a.run_id for a in await ApprovalRepository(db).list()}
    records = await ApprovalRepository(db).list(run_id=run_id)
    assert [(a.node, a.visit, a.status) for a in records] == [
        ("sign_off", 1, "rejected"),
        ("sign_off", 2, "approved"),
    ]


async def test_records_from_before_visits_count_as_the_first(db: Database) -> None:
    store = SQLCheckpointStore(db)
    run_id = await store.create_run("gate-loop", {})
    legacy = await store.approvals.request(run_id, "sign_off")  # as stored before visits
    assert (legacy.node, legacy.visit) == ("sign_off", None)
    await store.decide_approval(run_id, "sign_off", True, "ok")
    assert await store.approval(run_id, "sign_off", 1) == (True, "ok")
    assert await store.approval(run_id, "sign_off", 2) is None


def test_node_names_may_not_contain_the_visit_separator() -> None:
    wf = Workflow("w", Draft)
    with pytest.raises(WorkflowError, match="invalid node name"):
        wf.add_approval("a#1")
