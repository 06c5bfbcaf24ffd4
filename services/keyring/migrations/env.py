"""Alembic env for the keyring schema; the logic is shared by every service."""

from services.common.migrations_env import run

run("keyring")
