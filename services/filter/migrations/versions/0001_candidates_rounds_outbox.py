"""filter.candidates, filter.rounds, filter.outbox

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from services.common.db.migrations import baseline
from services.filter.tables import metadata

revision, down_revision, upgrade, downgrade = baseline(metadata)
