"""Alembic env for the gateway schema; the logic is shared by every service."""

from services.common.db.migrations import run

run("gateway")
