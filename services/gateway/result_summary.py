"""An order's candidates in numbers: generated, passed, delivered, and why the rest failed."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from headshots.v1 import headshots_pb2 as pb
from services.gateway.tables import results


async def rejection_summary(conn: Any, order_id: str) -> pb.RejectionSummary:
    counts = (
        await conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.count().filter(sa.func.cardinality(results.c.rejection_reasons) == 0),
                sa.func.count().filter(results.c.delivered),
            ).where(results.c.order_id == order_id)
        )
    ).one()
    reason = sa.func.unnest(results.c.rejection_reasons).label("reason")
    sub = sa.select(reason).where(results.c.order_id == order_id).subquery()
    by_reason = await conn.execute(sa.select(sub.c.reason, sa.func.count()).group_by(sub.c.reason))
    return pb.RejectionSummary(
        candidates=counts[0],
        passed=counts[1],
        delivered=counts[2],
        by_reason={r: int(n) for r, n in by_reason},
    )
