"""keyring.data_keys: one wrapped AES-256 data key per order

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from services.common.db.migrations import baseline
from services.common.keys.keyring import metadata

revision, down_revision, upgrade, downgrade = baseline(metadata)
