"""retention.schedule, retention.ledger, retention.erasures

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "retention"


def upgrade() -> None:
    op.create_table(
        "schedule",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("data_class", sa.Text, nullable=False),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        # pending -> done; a crash between steps resumes from `planned_*`.
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("planned_objects", sa.BigInteger, nullable=True),
        sa.Column("planned_bytes", sa.BigInteger, nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        # One deletion per class per order: a replayed lifecycle event cannot schedule twice.
        sa.UniqueConstraint("tenant_id", "order_id", "data_class", name="schedule_once"),
        schema=SCHEMA,
    )
    op.create_index(
        "schedule_due",
        "schedule",
        ["due_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "ledger",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("data_class", sa.Text, nullable=False),
        sa.Column("object_count", sa.BigInteger, nullable=False),
        sa.Column("byte_count", sa.BigInteger, nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("key_id_hash", sa.Text, nullable=True),
        # What made this entry; unique so a resumed sweep or a retried erasure never duplicates.
        sa.Column("source", sa.Text, nullable=False, unique=True),
        schema=SCHEMA,
    )
    op.create_index("ledger_order", "ledger", ["tenant_id", "order_id"], schema=SCHEMA)
    op.create_table(
        "erasures",
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("receipt_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("erasures", schema=SCHEMA)
    op.drop_table("ledger", schema=SCHEMA)
    op.drop_table("schedule", schema=SCHEMA)
