from __future__ import annotations

import pytest

from arbor.core.errors import NotFoundError, WorkflowError
from arbor.store import ApprovalRepository, Database, RunRepository


async def test_request_pauses_the_run_and_decide_releases_it(db: Database) -> None:
    runs, approvals = RunRepository(db), ApprovalRepository(db)
    run = await runs.create("deploy", status="running")
    approval = await approvals.request(run.id, "publish")
    assert approval.id.startswith("apr_") and approval.status == "pending"
    assert (approval.decided_by, approval.decided_at) == (None, None)
    paused = await runs.get(run.id)
    assert (paused.status, paused.current_node) == ("waiting_approval", "publish")
    assert await runs.resumable() == []

    decided = await approvals.decide(approval.id, approved=True, decided_by="key_ops", reason="ok")
    assert (decided.status, decided.decided_by, decided.reason) == ("approved", "key_ops", "ok")
    assert decided.decided_at is not None
    assert await approvals.get(approval.id) == decided
    assert [r.id for r in await runs.resumable()] == [run.id]  # back to pending
    with pytest.raises(WorkflowError, match="already approved"):
        await approvals.decide(approval.id, approved=False, decided_by="key_other")


async def test_reject_and_list(db: Database) -> None:
    runs, approvals = RunRepository(db), ApprovalRepository(db)
    a = await runs.create("w", status="running")
    b = await runs.create("w", status="running")
    first = await approvals.request(a.id, "n1")
    second = await approvals.request(b.id, "n2")
    rejected = await approvals.decide(second.id, approved=False, decided_by="u", reason="no")
    assert rejected.status == "rejected"
    assert [x.id for x in await approvals.list()] == [first.id, second.id]
    assert [x.id for x in await approvals.list(status="pending")] == [first.id]
    assert [x.id for x in await approvals.list(run_id=b.id)] == [second.id]
    assert await approvals.list(run_id=b.id, status="pending") == []
    assert await approvals.latest(b.id, "n2") == rejected
    assert await approvals.latest(b.id, "n1") is None
    # Asked again for the same node (a loop): the newest one is the one that counts.
    await runs.update(b.id, status="running")
    again = await approvals.request(b.id, "n2")
    assert await approvals.latest(b.id, "n2") == again


async def test_missing_objects_are_not_found(db: Database) -> None:
    approvals = ApprovalRepository(db)
    with pytest.raises(NotFoundError):
        await approvals.request("run_nope", "n")
    with pytest.raises(NotFoundError):
        await approvals.get("apr_nope")
    with pytest.raises(NotFoundError):
        await approvals.decide("apr_nope", approved=True, decided_by="u")
