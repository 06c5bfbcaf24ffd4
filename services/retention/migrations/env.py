"""Alembic env for the retention schema; the logic is shared by every service."""

from services.common.db.migrations import run

run("retention")
