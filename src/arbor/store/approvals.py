"""Human approvals: a run pauses at a node until a person approves or rejects it.

:meth:`ApprovalRepository.request` records a pending approval and moves the run to
``waiting_approval`` in one transaction. :meth:`ApprovalRepository.decide` records the
decision and moves the run back to ``pending``, so :meth:`RunRepository.resumable` hands it
to the engine, which reads the decision and takes the matching edge. A decision is final.

Approvals are per visit: a loop that passes an approval node twice asks twice. The visit is
kept in the ``node`` column as ``node#visit`` (no migration needed); records show the plain
node name and the ``visit`` apart. Records written before visits existed (plain ``node``)
count as visit 1.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from arbor.core.errors import NotFoundError, WorkflowError
from arbor.core.ids import new_id
from arbor.store._util import utcnow
from arbor.store.engine import Database
from arbor.store.events import lock_run
from arbor.store.tables import APPROVAL_STATUSES, ApprovalRow

__all__ = ["ApprovalRecord", "ApprovalRepository", "ApprovalStatus"]

ApprovalStatus = Literal["pending", "approved", "rejected"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRecord:
    id: str
    run_id: str
    node: str
    #: Which visit of ``node`` asked (None for records from before visits were kept).
    visit: int | None
    status: ApprovalStatus
    decided_by: str | None
    reason: str | None
    created_at: datetime
    decided_at: datetime | None


class ApprovalRepository:
    """Approvals of paused runs; each method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def request(self, run_id: str, node: str, *, visit: int | None = None) -> ApprovalRecord:
        """A pending approval for ``node`` (its ``visit``-th pass); the run becomes
        ``waiting_approval``."""
        if "#" in node:
            raise ValueError(f"approval node names may not contain '#': {node!r}")
        async with self._db.session(write=True) as session:
            run = await lock_run(session, run_id)
            now = utcnow()
            row = ApprovalRow(
                id=new_id("apr"),
                run_id=run_id,
                node=node if visit is None else f"{node}#{visit}",
                status="pending",
                decided_by=None,
                reason=None,
                created_at=now,
                decided_at=None,
            )
            session.add(row)
            run.status = "waiting_approval"
            run.current_node = node
            run.updated_at = now
        return _record(row)

    async def get(self, approval_id: str) -> ApprovalRecord:
        async with self._db.session() as session:
            row = await session.get(ApprovalRow, approval_id)
        if row is None:
            raise NotFoundError(f"approval {approval_id!r} not found")
        return _record(row)

    async def latest(
        self, run_id: str, node: str, *, visit: int | None = None
    ) -> ApprovalRecord | None:
        """The newest approval asked for ``node`` in this run (of that ``visit``, or of any),
        decided or not; None if none."""
        match: ColumnElement[bool]
        if visit is not None:
            keys = [f"{node}#{visit}", *([node] if visit == 1 else [])]
            match = ApprovalRow.node.in_(keys)
        else:
            match = or_(
                ApprovalRow.node == node,
                ApprovalRow.node.startswith(f"{node}#", autoescape=True),
            )
        query = (
            select(ApprovalRow)
            .where(ApprovalRow.run_id == run_id, match)
            .order_by(ApprovalRow.created_at.desc(), ApprovalRow.id.desc())
            .limit(1)
        )
        async with self._db.session() as session:
            row = await session.scalar(query)
        return None if row is None else _record(row)

    async def list(
        self, *, run_id: str | None = None, status: ApprovalStatus | None = None
    ) -> builtins.list[ApprovalRecord]:
        """Approvals oldest first, optionally of one run and/or with one status."""
        conditions: builtins.list[ColumnElement[bool]] = []
        if run_id is not None:
            conditions.append(ApprovalRow.run_id == run_id)
        if status is not None:
            conditions.append(ApprovalRow.status == _check_status(status))
        query = (
            select(ApprovalRow).where(*conditions).order_by(ApprovalRow.created_at, ApprovalRow.id)
        )
        async with self._db.session() as session:
            rows = (await session.scalars(query)).all()
        return [_record(row) for row in rows]

    async def decide(
        self, approval_id: str, *, approved: bool, decided_by: str, reason: str | None = None
    ) -> ApprovalRecord:
        """Approve or reject; the run goes back to ``pending`` to be resumed. Deciding twice
        is a WorkflowError."""
        async with self._db.session(write=True) as session:
            row = await _locked(session, approval_id)
            run = await lock_run(session, row.run_id)
            if row.status != "pending":
                raise WorkflowError(
                    f"approval {approval_id!r} was already {row.status}", run_id=row.run_id
                )
            now = utcnow()
            row.status = "approved" if approved else "rejected"
            row.decided_by = decided_by
            row.reason = reason
            row.decided_at = now
            if run.status == "waiting_approval":
                run.status = "pending"
                run.updated_at = now
        return _record(row)


async def _locked(session: AsyncSession, approval_id: str) -> ApprovalRow:
    row = await session.get(ApprovalRow, approval_id, with_for_update=True)
    if row is None:
        raise NotFoundError(f"approval {approval_id!r} not found")
    return row


def _check_status(status: str) -> ApprovalStatus:
    if status not in APPROVAL_STATUSES:
        raise ValueError(
            f"approval status must be one of {list(APPROVAL_STATUSES)}, not {status!r}"
        )
    return status  # type: ignore[return-value]


def _split(key: str) -> tuple[str, int | None]:
    node, sep, visit = key.rpartition("#")
    return (node, int(visit)) if sep and visit.isdigit() else (key, None)


def _record(row: ApprovalRow) -> ApprovalRecord:
    node, visit = _split(row.node)
    return ApprovalRecord(
        id=row.id,
        run_id=row.run_id,
        node=node,
        visit=visit,
        status=_check_status(row.status),
        decided_by=row.decided_by,
        reason=row.reason,
        created_at=row.created_at,
        decided_at=row.decided_at,
    )
