"""Alembic env for the filter schema; the logic is shared by every service."""

from services.common.db.migrations import run

run("filter")
