"""Alembic env for the gateway schema; the logic is shared by every service."""

from services.common.migrations_env import run

run("gateway")
