"""Leases on workflow runs: which process drives a run, so two servers on one database never
both do.

A process takes a run's lease with one conditional UPDATE (:meth:`RunLeases.acquire`): it wins
only if the lease is free, expired, or already its own, and only while the run is unfinished.
The holder renews it while it drives the run (:meth:`RunLeases.renew`, which also fails once
the run is finished or cancelled by anyone, or the lease was taken over) and releases it when it
stops, by expiring it at once. A process that dies leaves its lease to expire; either way
another process then finds the run among :meth:`RunLeases.claimable` (if it is still
``pending``/``running``) and takes it over. A run that never had a lease (``lease_owner``
NULL) is driven by something that does not take leases, or by nobody.

Every method is one transaction and works the same on SQLite and PostgreSQL. The time a lease
is stamped with and checked against comes from the :class:`~arbor.core.clock.Clock` given
(the system's by default), so a test can let a lease run out without waiting for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from arbor.core.clock import Clock, SystemClock
from arbor.core.errors import NotFoundError
from arbor.store._records import RESUMABLE_STATUSES, TERMINAL_STATUSES
from arbor.store.engine import Database
from arbor.store.tables import RUN_STATUSES, BatchItemRow, RunRow

__all__ = ["LeaseHolder", "RunLeases"]

#: Statuses a driven run can be in while its lease is held (a run pausing for approval
#: writes ``waiting_approval`` before its driver lets go).
_HELD = tuple(s for s in RUN_STATUSES if s not in TERMINAL_STATUSES)


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Who last held a run's lease and until when (``owner`` None: never leased); ``held``:
    whether the lease held (not released, not expired) when it was read."""

    owner: str | None
    expires_at: datetime | None
    held: bool


class RunLeases:
    """Leases on ``runs`` rows (columns ``lease_owner``, ``lease_expires_at``) in ``db``,
    timed by ``clock`` (default: the system clock; its ``time()`` is the wall time)."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self._db = db
        self._clock = clock or SystemClock()

    def now(self) -> datetime:
        """The time leases are stamped with and checked against (UTC)."""
        return datetime.fromtimestamp(self._clock.time(), UTC)

    async def acquire(self, run_id: str, owner: str, seconds: float) -> bool:
        """Take (or extend) the lease for ``seconds`` if it is free, expired or ``owner``'s
        and the run is unfinished; False otherwise. NotFoundError for an unknown run."""
        _check(owner, seconds)
        now = self.now()
        free = or_(
            RunRow.lease_owner.is_(None),
            RunRow.lease_expires_at.is_(None),
            RunRow.lease_expires_at <= now,
            RunRow.lease_owner == owner,
        )
        won = await self._set(
            and_(RunRow.id == run_id, RunRow.status.in_(_HELD), free),
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=seconds),
        )
        if not won:
            await self.holder(run_id)  # NotFoundError for an unknown run
        return won

    async def renew(self, run_id: str, owner: str, seconds: float) -> bool:
        """Extend ``owner``'s lease; False once it lost it (taken over after expiring) or the
        run finished or was cancelled (by any process): the driver should stop then."""
        _check(owner, seconds)
        return await self._set(
            and_(RunRow.id == run_id, RunRow.lease_owner == owner, RunRow.status.in_(_HELD)),
            lease_expires_at=self.now() + timedelta(seconds=seconds),
        )

    async def release(self, run_id: str, owner: str) -> bool:
        """Let go of ``owner``'s lease by expiring it now (nothing happens if someone else
        holds it): an unfinished run is then free for any process's sweep."""
        return await self._set(
            and_(RunRow.id == run_id, RunRow.lease_owner == owner),
            lease_expires_at=self.now(),
        )

    async def holder(self, run_id: str) -> LeaseHolder:
        """Who holds the run's lease now (an expired one is reported as it is stored)."""
        query = select(RunRow.lease_owner, RunRow.lease_expires_at).where(RunRow.id == run_id)
        async with self._db.session() as session:
            row = (await session.execute(query)).first()
        if row is None:
            raise NotFoundError(f"run {run_id!r} not found")
        owner, expires_at = row[0], row[1]
        return LeaseHolder(owner, expires_at, expires_at is not None and expires_at > self.now())

    async def claimable(self, owner: str | None = None, *, unleased: bool = True) -> list[str]:
        """Ids of ``pending``/``running`` runs nobody holds, oldest first: their lease
        expired, or (``unleased``) they never had one; with ``owner``, also the ones it
        holds itself.

        Runs driven without leases (a batch's workflow items, ``arbor run``) look unleased
        while they run: a periodic sweep passes ``unleased=False`` and leaves them alone.
        A batch item's run is never claimable: whoever holds the item's lease drives it."""
        now = self.now()
        free = [and_(RunRow.lease_owner.is_not(None), RunRow.lease_expires_at <= now)]
        if unleased:
            free.append(RunRow.lease_owner.is_(None))
        if owner is not None:
            free.append(RunRow.lease_owner == owner)
        query = (
            select(RunRow.id)
            .where(
                RunRow.status.in_(sorted(RESUMABLE_STATUSES)),
                or_(*free),
                # One pass over the batch items' run ids (no index on them): NOT IN, not a
                # correlated NOT EXISTS per candidate run.
                RunRow.id.not_in(
                    select(BatchItemRow.run_id).where(BatchItemRow.run_id.is_not(None))
                ),
            )
            .order_by(RunRow.created_at, RunRow.id)
        )
        async with self._db.session() as session:
            return list((await session.scalars(query)).all())

    async def _set(self, where: Any, **values: Any) -> bool:
        statement = (
            update(RunRow)
            .where(where)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        async with self._db.session(write=True) as session:
            result = await session.execute(statement)
            return int(result.rowcount) == 1  # type: ignore[attr-defined]


def _check(owner: str, seconds: float) -> None:
    if not owner:
        raise ValueError("a lease owner must be a non-empty string")
    if not seconds > 0:
        raise ValueError(f"a lease must last more than 0 seconds, not {seconds}")
