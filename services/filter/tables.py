"""The filter schema: every candidate's scores and reasons, per-round bookkeeping, outbox.

The one declaration of these tables: the baseline migration creates them from here.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from services.common.bus.outbox import outbox_table

SCHEMA = "filter"
metadata = sa.MetaData(schema=SCHEMA)

candidates = sa.Table(
    "candidates",
    metadata,
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("result_id", sa.Text, nullable=False),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("batch", sa.Integer, nullable=False),
    sa.Column("style_id", sa.Text, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("blob_key", sa.Text, nullable=False),
    sa.Column("candidate", sa.LargeBinary, nullable=False),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("reasons", ARRAY(sa.Text), nullable=False),
    sa.Column("scores", JSONB, nullable=False),
    sa.Column("embedding", sa.LargeBinary, nullable=True),
    sa.Column("scored_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.PrimaryKeyConstraint("tenant_id", "order_id", "result_id"),
)

sa.Index("candidates_round", candidates.c.tenant_id, candidates.c.order_id, candidates.c.round)

rounds = sa.Table(
    "rounds",
    metadata,
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("round_total", sa.Integer, nullable=False),
    sa.Column("result_count", sa.Integer, nullable=False),
    sa.Column("final_round", sa.Boolean, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    sa.PrimaryKeyConstraint("tenant_id", "order_id", "round"),
)

outbox = outbox_table(metadata, SCHEMA)
