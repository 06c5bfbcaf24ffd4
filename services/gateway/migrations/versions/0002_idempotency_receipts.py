"""gateway: request hashes for idempotent CreateOrder, deletion receipts kept after erasure

Idempotent, like every revision after the baseline: a database the baseline created from
the newer declaration (services/gateway/tables.py) already has all of it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.execute(f"ALTER TABLE {SCHEMA}.orders ADD COLUMN IF NOT EXISTS request_hash text")
    op.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {SCHEMA}.deletion_receipts (
            receipt_id text PRIMARY KEY,
            tenant_id text NOT NULL,
            request_id text,
            order_key text NOT NULL,
            receipt bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT deletion_receipts_request_once UNIQUE (tenant_id, request_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS deletion_receipts_order "
        f"ON {SCHEMA}.deletion_receipts (tenant_id, order_key)"
    )


def downgrade() -> None:
    op.execute(f"DROP TABLE IF EXISTS {SCHEMA}.deletion_receipts")
    op.execute(f"ALTER TABLE {SCHEMA}.orders DROP COLUMN IF EXISTS request_hash")
