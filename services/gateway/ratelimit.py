"""Per-tenant request rate limit, shared by every gateway replica through PostgreSQL.

A fixed one-minute window per tenant: one `INSERT .. ON CONFLICT DO UPDATE .. RETURNING`
per request counts and reads in a single round trip, and the count is the same whichever
replica the load balancer picked (an in-process bucket would multiply the limit by the
replica count under the HPA). Windows older than a few minutes are pruned by the reconciler.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import grpc
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.grpc.errors import ApiError
from services.gateway.tables import rate_windows, tenants

WINDOW_S = 60


class RateLimiter:
    def __init__(self, engine: AsyncEngine, default_per_minute: int) -> None:
        self.engine = engine
        self.default_per_minute = default_per_minute

    async def hit(self, tenant_id: str) -> None:
        """Count one request; raise RESOURCE_EXHAUSTED (QuotaFailure, RetryInfo) past the limit."""
        now = time.time()
        start = datetime.fromtimestamp(now - now % WINDOW_S, UTC)
        stmt = insert(rate_windows).values(tenant_id=tenant_id, window_start=start, count=1)
        stmt = stmt.on_conflict_do_update(
            index_elements=[rate_windows.c.tenant_id, rate_windows.c.window_start],
            set_={"count": rate_windows.c.count + 1},
        ).returning(rate_windows.c.count)
        async with self.engine.begin() as conn:
            count = (await conn.execute(stmt)).scalar_one()
            limit = (
                await conn.execute(
                    sa.select(tenants.c.requests_per_minute).where(tenants.c.tenant_id == tenant_id)
                )
            ).scalar_one_or_none()
        per_minute = limit or self.default_per_minute
        if count > per_minute:
            retry = WINDOW_S - now % WINDOW_S
            raise ApiError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit of {per_minute} requests per minute reached; retry in {retry:.0f}s",
                quota_violations=[(f"tenants/{tenant_id}", f"{per_minute} requests per minute")],
                reason="RATE_LIMITED",
                retry_after_s=retry,
            )

    async def prune(self, keep: timedelta = timedelta(minutes=5)) -> int:
        cutoff = datetime.now(UTC) - keep
        async with self.engine.begin() as conn:
            result = await conn.execute(
                sa.delete(rate_windows).where(rate_windows.c.window_start < cutoff)
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
