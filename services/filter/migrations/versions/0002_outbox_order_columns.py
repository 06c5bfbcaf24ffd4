"""filter.outbox gets the order columns every outbox has, so erasure deletes its rows

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "filter"


def upgrade() -> None:
    # IF NOT EXISTS: a database created after the shared outbox shape already has them.
    op.execute(
        f"ALTER TABLE {SCHEMA}.outbox "
        "ADD COLUMN IF NOT EXISTS tenant_id text, ADD COLUMN IF NOT EXISTS order_id text"
    )


def downgrade() -> None:
    op.execute(f"ALTER TABLE {SCHEMA}.outbox DROP COLUMN tenant_id, DROP COLUMN order_id")
