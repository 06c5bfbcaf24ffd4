"""Alembic env for the filter schema; the logic is shared by every service."""

from services.common.migrations_env import run

run("filter")
