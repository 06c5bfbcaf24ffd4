"""filter.candidates, filter.rounds, filter.outbox

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

from services.common.db.migrations import create_declared, drop_declared
from services.filter.tables import metadata

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_declared(op, metadata)


def downgrade() -> None:
    drop_declared(op, metadata)
