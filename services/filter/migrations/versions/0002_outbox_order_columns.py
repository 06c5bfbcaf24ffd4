"""filter.outbox takes the shape every outbox has: order columns (so erasure deletes its rows)
and a BIGSERIAL id like the gateway's (it had an identity column)

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
    # Idempotent: a database the baseline created from the shared shape already has it all.
    op.execute(
        f"ALTER TABLE {SCHEMA}.outbox "
        "ADD COLUMN IF NOT EXISTS tenant_id text, ADD COLUMN IF NOT EXISTS order_id text"
    )
    op.execute(f"ALTER TABLE {SCHEMA}.outbox ALTER COLUMN id DROP IDENTITY IF EXISTS")
    op.execute(f"CREATE SEQUENCE IF NOT EXISTS {SCHEMA}.outbox_id_seq OWNED BY {SCHEMA}.outbox.id")
    # Continue after the ids already used, so no message id repeats.
    op.execute(
        f"SELECT setval('{SCHEMA}.outbox_id_seq', "
        f"GREATEST((SELECT max(id) FROM {SCHEMA}.outbox), "
        f"(SELECT last_value FROM {SCHEMA}.outbox_id_seq)))"
    )
    op.execute(
        f"ALTER TABLE {SCHEMA}.outbox ALTER COLUMN id SET DEFAULT nextval('{SCHEMA}.outbox_id_seq')"
    )


def downgrade() -> None:
    op.execute(f"ALTER TABLE {SCHEMA}.outbox DROP COLUMN tenant_id, DROP COLUMN order_id")
