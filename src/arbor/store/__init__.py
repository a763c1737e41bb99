"""The store: the relational database behind Arbor (SQLite file by default, PostgreSQL by
``ARBOR_DATABASE_URL``), its Alembic migrations and the repositories that read and write it.

``store`` imports only ``arbor.core``.
"""

from __future__ import annotations

from arbor.store.engine import Database, create_engine, database_url
from arbor.store.migrator import alembic_config, current_revision, head_revision, migrate
from arbor.store.usage import UsageGroupBy, UsageRecord, UsageRepository, UsageSummaryRow

__all__ = [
    "Database",
    "UsageGroupBy",
    "UsageRecord",
    "UsageRepository",
    "UsageSummaryRow",
    "alembic_config",
    "create_engine",
    "current_revision",
    "database_url",
    "head_revision",
    "migrate",
]
