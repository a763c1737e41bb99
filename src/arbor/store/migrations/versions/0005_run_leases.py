"""runs.lease_owner and runs.lease_expires_at: which process drives a run, and until when.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A frozen copy of the type in tables.py: a migration never imports application code.
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no default) on both databases: no table copy on SQLite,
    # whose copy-and-rename would drop the table that checkpoints and events reference.
    op.add_column("runs", sa.Column("lease_owner", sa.String(), nullable=True))
    op.add_column("runs", sa.Column("lease_expires_at", TIMESTAMP, nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "lease_expires_at")
    op.drop_column("runs", "lease_owner")
