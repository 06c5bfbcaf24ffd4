"""Alembic env for the keyring schema; the logic is shared by every service."""

from services.common.db.migrations import run

run("keyring")
