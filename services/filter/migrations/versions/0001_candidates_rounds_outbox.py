"""filter.candidates, filter.rounds, filter.outbox

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from services.common.bus.outbox import create_outbox

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "filter"


def upgrade() -> None:
    op.create_table(
        "candidates",
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
        schema=SCHEMA,
    )
    op.create_index(
        "candidates_round", "candidates", ["tenant_id", "order_id", "round"], schema=SCHEMA
    )
    op.create_table(
        "rounds",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("round_total", sa.Integer, nullable=False),
        sa.Column("result_count", sa.Integer, nullable=False),
        sa.Column("final_round", sa.Boolean, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("tenant_id", "order_id", "round"),
        schema=SCHEMA,
    )
    create_outbox(op, SCHEMA)


def downgrade() -> None:
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_table("rounds", schema=SCHEMA)
    op.drop_table("candidates", schema=SCHEMA)
