"""agents, runs, checkpoints, idempotency_records, events, approvals: durable workflows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in tables.py: a migration never imports application code.
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NULLABLE_JSON_DOC = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
TIMESTAMP = sa.DateTime(timezone=True)


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["run_id"], ["runs.id"], name=op.f(f"fk_{table}_run_id_runs"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("definition", JSON_DOC, nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("failures", JSON_DOC, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "status IN ('enabled', 'disabled', 'disabled_flapping')",
            name=op.f("ck_agents_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("name", name=op.f("uq_agents_name")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workflow", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("input", JSON_DOC, nullable=False),
        sa.Column("output", NULLABLE_JSON_DOC, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("current_node", sa.String(), nullable=True),
        sa.Column("parent_id", sa.String(length=64), nullable=True),
        sa.Column("thread_id", sa.String(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'waiting_approval', 'succeeded', 'failed', "
            "'cancelled')",
            name=op.f("ck_runs_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_created_at_id"), "runs", ["created_at", "id"])
    op.create_index(op.f("ix_runs_status_created_at_id"), "runs", ["status", "created_at", "id"])
    op.create_index(
        op.f("ix_runs_workflow_created_at_id"), "runs", ["workflow", "created_at", "id"]
    )
    op.create_index(op.f("ix_runs_parent_id"), "runs", ["parent_id"])
    op.create_index(op.f("ix_runs_thread_id"), "runs", ["thread_id"])
    op.create_table(
        "checkpoints",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("node", sa.String(), nullable=False),
        sa.Column("delta", JSON_DOC, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        _run_fk("checkpoints"),
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_checkpoints")),
    )
    op.create_table(
        "idempotency_records",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", JSON_DOC, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        _run_fk("idempotency_records"),
        sa.PrimaryKeyConstraint("run_id", "key", name=op.f("pk_idempotency_records")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("node", sa.String(), nullable=True),
        sa.Column("data", JSON_DOC, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        _run_fk("events"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("run_id", "seq", name=op.f("uq_events_run_id_seq")),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("decided_by", sa.String(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("decided_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected')", name=op.f("ck_approvals_status")
        ),
        _run_fk("approvals"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    op.create_index(op.f("ix_approvals_run_id"), "approvals", ["run_id"])
    op.create_index(op.f("ix_approvals_status_created_at"), "approvals", ["status", "created_at"])


def downgrade() -> None:
    op.drop_table("approvals")
    op.drop_table("events")
    op.drop_table("idempotency_records")
    op.drop_table("checkpoints")
    op.drop_table("runs")
    op.drop_table("agents")
