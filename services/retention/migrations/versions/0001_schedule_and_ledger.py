"""retention.schedule, retention.ledger, retention.erasures

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from services.common.db.migrations import baseline
from services.retention.tables import metadata

revision, down_revision, upgrade, downgrade = baseline(metadata)
