"""gateway: CreatePreview request ids, so a retried preview renders with the same seed

Idempotent, like every revision after the baseline: a database the baseline created from
the newer declaration (services/gateway/tables.py) already has all of it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {SCHEMA}.preview_requests (
            tenant_id text NOT NULL,
            request_id text NOT NULL,
            request_hash text NOT NULL,
            seed bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, request_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS preview_requests_created "
        f"ON {SCHEMA}.preview_requests (created_at)"
    )


def downgrade() -> None:
    op.execute(f"DROP TABLE IF EXISTS {SCHEMA}.preview_requests")
