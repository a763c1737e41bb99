"""The store: the relational database behind Arbor (SQLite file by default, PostgreSQL by
``ARBOR_DATABASE_URL``), its Alembic migrations and the repositories that read and write it.

``store`` imports only ``arbor.core``.
"""

from __future__ import annotations

from arbor.store.agents import AgentExistsError, AgentRecord, AgentRepository, AgentStatus
from arbor.store.approvals import ApprovalRecord, ApprovalRepository, ApprovalStatus
from arbor.store.engine import Database, create_engine, database_url
from arbor.store.events import EventRecord, EventRepository, NewEvent
from arbor.store.keys import KeyRecord, KeyRepository, KeyScope, KeyStatus, NewKey
from arbor.store.migrator import alembic_config, current_revision, head_revision, migrate
from arbor.store.runs import (
    CheckpointRecord,
    CheckpointResult,
    IdempotentRecord,
    RunPage,
    RunRecord,
    RunRepository,
    RunState,
    RunStatus,
    fold_deltas,
)
from arbor.store.usage import UsageGroupBy, UsageRecord, UsageRepository, UsageSummaryRow

__all__ = [
    "AgentExistsError",
    "AgentRecord",
    "AgentRepository",
    "AgentStatus",
    "ApprovalRecord",
    "ApprovalRepository",
    "ApprovalStatus",
    "CheckpointRecord",
    "CheckpointResult",
    "Database",
    "EventRecord",
    "EventRepository",
    "IdempotentRecord",
    "KeyRecord",
    "KeyRepository",
    "KeyScope",
    "KeyStatus",
    "NewEvent",
    "NewKey",
    "RunPage",
    "RunRecord",
    "RunRepository",
    "RunState",
    "RunStatus",
    "UsageGroupBy",
    "UsageRecord",
    "UsageRepository",
    "UsageSummaryRow",
    "alembic_config",
    "create_engine",
    "current_revision",
    "database_url",
    "fold_deltas",
    "head_revision",
    "migrate",
]
