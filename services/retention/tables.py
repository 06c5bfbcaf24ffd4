"""The retention schema as SQLAlchemy Core tables (DDL lives in migrations/)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

SCHEMA = "retention"
metadata = sa.MetaData(schema=SCHEMA)

schedule = sa.Table(
    "schedule",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("tenant_id", sa.Text),
    sa.Column("order_id", sa.Text),
    sa.Column("data_class", sa.Text),
    sa.Column("policy", sa.Text),
    sa.Column("due_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.Text),
    sa.Column("planned_objects", sa.BigInteger),
    sa.Column("planned_bytes", sa.BigInteger),
    sa.Column("done_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)

ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text),
    sa.Column("order_id", sa.Text),
    sa.Column("data_class", sa.Text),
    sa.Column("object_count", sa.BigInteger),
    sa.Column("byte_count", sa.BigInteger),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    sa.Column("trigger", sa.Text),
    sa.Column("key_id_hash", sa.Text),
    sa.Column("source", sa.Text),
)

erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text),
    sa.Column("order_id", sa.Text),
    sa.Column("receipt_id", postgresql.UUID(as_uuid=True)),
    sa.Column("status", sa.Text),
    sa.Column("requested_at", sa.DateTime(timezone=True)),
    sa.Column("completed_at", sa.DateTime(timezone=True)),
)
