"""The retention schema: deletion schedule, ledger and erasure requests.

The one declaration of these tables: the baseline migration creates them from here.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

SCHEMA = "retention"
metadata = sa.MetaData(schema=SCHEMA)

schedule = sa.Table(
    "schedule",
    metadata,
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
)

sa.Index("schedule_due", schedule.c.due_at, postgresql_where=sa.text("status = 'pending'"))

ledger = sa.Table(
    "ledger",
    metadata,
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
)

sa.Index("ledger_order", ledger.c.tenant_id, ledger.c.order_id)

erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("receipt_id", postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
)
