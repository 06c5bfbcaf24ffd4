"""keyring.data_keys: one wrapped AES-256 data key per order

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

SCHEMA = "keyring"


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("key_id", postgresql.UUID(as_uuid=True), nullable=False, unique=True),
        # NULL once destroyed (crypto-shredding); the row stays as proof of erasure.
        sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
        sa.Column("master_key_id", sa.Text, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "order_id", name="data_keys_pkey"),
        # A live key always has key material; a destroyed one never does.
        sa.CheckConstraint(
            "(destroyed_at IS NULL) = (wrapped_key IS NOT NULL)", name="data_keys_live_has_key"
        ),
        schema=SCHEMA,
    )
    # Rotation scans rows still wrapped by an old master key.
    op.create_index(
        "data_keys_master_key_id_live",
        "data_keys",
        ["master_key_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("destroyed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("data_keys", schema=SCHEMA)
