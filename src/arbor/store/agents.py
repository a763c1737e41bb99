"""Stored agent definitions and their supervision status.

The agents layer owns the schema of ``definition`` (role, instructions, model, tools,
memory policy, output type); the store keeps it as a JSON document under a unique name.

Supervision: :meth:`AgentRepository.record_failure` appends a failure time and, when
``threshold`` failures fall within ``window``, disables the agent as ``disabled_flapping``
— atomically, so concurrent failures of one agent count exactly. Re-enabling
(:meth:`AgentRepository.set_status`) clears the failure history.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from arbor.core.errors import ArborError, NotFoundError
from arbor.core.ids import new_id
from arbor.store._util import aware, utcnow
from arbor.store.engine import Database
from arbor.store.tables import AGENT_STATUSES, AgentRow

__all__ = ["AgentExistsError", "AgentRecord", "AgentRepository", "AgentStatus"]

AgentStatus = Literal["enabled", "disabled", "disabled_flapping"]


class AgentExistsError(ArborError):
    """An agent with that name already exists."""

    kind = "conflict"

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRecord:
    id: str
    name: str
    definition: dict[str, Any]
    status: AgentStatus
    #: Recent failure times, oldest first, within the last flap window.
    failures: tuple[datetime, ...]
    created_at: datetime
    updated_at: datetime

    @property
    def enabled(self) -> bool:
        return self.status == "enabled"


class AgentRepository:
    """Agent definitions by id and by unique name; each method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, name: str, definition: dict[str, Any], *, status: AgentStatus = "enabled"
    ) -> AgentRecord:
        """A new agent; AgentExistsError if the name is taken."""
        now = utcnow()
        row = AgentRow(
            id=new_id("agt"),
            name=name,
            definition=definition,
            status=_check_status(status),
            failures=[],
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._db.session() as session:
                session.add(row)
        except IntegrityError:
            raise AgentExistsError(f"agent {name!r} already exists", name=name) from None
        return _record(row)

    async def put(self, name: str, definition: dict[str, Any]) -> AgentRecord:
        """Create the agent, or replace the definition of the one with that name (loading
        YAML files); an existing agent keeps its id and status."""
        async with self._db.session(write=True) as session:
            row = await session.scalar(
                select(AgentRow).where(AgentRow.name == name).with_for_update()
            )
            now = utcnow()
            if row is None:
                row = AgentRow(
                    id=new_id("agt"),
                    name=name,
                    definition=definition,
                    status="enabled",
                    failures=[],
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
            else:
                row.definition = definition
                row.updated_at = now
        return _record(row)

    async def get(self, agent_id: str) -> AgentRecord:
        async with self._db.session() as session:
            row = await session.get(AgentRow, agent_id)
        if row is None:
            raise NotFoundError(f"agent {agent_id!r} not found")
        return _record(row)

    async def get_by_name(self, name: str) -> AgentRecord:
        async with self._db.session() as session:
            row = await session.scalar(select(AgentRow).where(AgentRow.name == name))
        if row is None:
            raise NotFoundError(f"agent {name!r} not found")
        return _record(row)

    async def find(self, name_or_id: str) -> AgentRecord:
        """An agent by name, or by id (``agt_…``): the one lookup the API and the CLI share,
        so both accept the same handles and fail with the same message."""
        try:
            return await self.get_by_name(name_or_id)
        except NotFoundError:
            if not name_or_id.startswith("agt_"):
                raise
        return await self.get(name_or_id)

    async def list(self, *, status: AgentStatus | None = None) -> builtins.list[AgentRecord]:
        """Agents by name, optionally only those with ``status``."""
        query = select(AgentRow).order_by(AgentRow.name)
        if status is not None:
            query = query.where(AgentRow.status == _check_status(status))
        async with self._db.session() as session:
            rows = (await session.scalars(query)).all()
        return [_record(row) for row in rows]

    async def update_definition(self, agent_id: str, definition: dict[str, Any]) -> AgentRecord:
        async with self._db.session(write=True) as session:
            row = await _locked(session, agent_id)
            row.definition = definition
            row.updated_at = utcnow()
        return _record(row)

    async def set_status(self, agent_id: str, status: AgentStatus) -> AgentRecord:
        """Enable or disable; the failure history starts afresh."""
        async with self._db.session(write=True) as session:
            row = await _locked(session, agent_id)
            row.status = _check_status(status)
            row.failures = []
            row.updated_at = utcnow()
        return _record(row)

    async def record_failure(
        self,
        agent_id: str,
        *,
        threshold: int,
        window: timedelta,
        now: datetime | None = None,
    ) -> AgentRecord:
        """Count one failure; ``threshold`` failures within ``window`` of ``now`` disable an
        enabled agent as ``disabled_flapping``. Returns the agent as it now is."""
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, not {threshold}")
        at = aware("now", now) if now is not None else utcnow()
        async with self._db.session(write=True) as session:
            row = await _locked(session, agent_id)
            since = at - window
            recent = [t for t in _times(row.failures) if t > since]
            recent.append(at)
            row.failures = [t.isoformat() for t in sorted(recent)]
            if row.status == "enabled" and len(recent) >= threshold:
                row.status = "disabled_flapping"
            row.updated_at = utcnow()
        return _record(row)

    async def delete(self, agent_id: str) -> None:
        async with self._db.session(write=True) as session:
            row = await _locked(session, agent_id)
            await session.delete(row)


async def _locked(session: AsyncSession, agent_id: str) -> AgentRow:
    row = await session.get(AgentRow, agent_id, with_for_update=True)
    if row is None:
        raise NotFoundError(f"agent {agent_id!r} not found")
    return row


def _check_status(status: str) -> AgentStatus:
    if status not in AGENT_STATUSES:
        raise ValueError(f"agent status must be one of {list(AGENT_STATUSES)}, not {status!r}")
    return status  # type: ignore[return-value]


def _times(values: builtins.list[str]) -> builtins.list[datetime]:
    return [datetime.fromisoformat(v) for v in values]


def _record(row: AgentRow) -> AgentRecord:
    return AgentRecord(
        id=row.id,
        name=row.name,
        definition=row.definition,
        status=_check_status(row.status),
        failures=tuple(_times(row.failures)),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
