"""gateway: each photo keeps the filter's facts about it, so a growing set is judged without
analysing earlier photos again

Idempotent, like every revision after the baseline. Rows stored before have no facts
(NULL): the gateway analyses such a photo's image once, the next time its set is judged,
and stores what it gets.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.execute(f"ALTER TABLE {SCHEMA}.photos ADD COLUMN IF NOT EXISTS selfie_facts bytea")


def downgrade() -> None:
    op.execute(f"ALTER TABLE {SCHEMA}.photos DROP COLUMN IF EXISTS selfie_facts")
