"""Per-tenant request rate limit (shared by every gateway replica through PostgreSQL) and
the failed-authentication throttle (per replica, in memory).

A fixed one-minute window per tenant: one `INSERT .. ON CONFLICT DO UPDATE .. RETURNING`
per request counts and reads in a single round trip, and the count is the same whichever
replica the load balancer picked (an in-process bucket would multiply the limit by the
replica count under the HPA). Windows older than a few minutes are pruned by the reconciler.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import grpc
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.grpc.errors import ApiError
from services.gateway.tables import rate_windows, tenants
from services.policy.limits import limits

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


class AuthThrottle:
    """Failed authentication, counted per client address and per key prefix, in process.

    After `per_address` (`per_key`) failures of one subject inside `window_s`, its calls are
    refused (RESOURCE_EXHAUSTED with RetryInfo) without looking at the secret until the
    window ends: no database read, no hash, nothing an online guesser can learn from.
    Successful calls are never counted. The table keeps the `max_subjects` most recently
    failing subjects (LRU), so a flood of made-up addresses or key ids costs bounded memory;
    a subject pushed out simply starts counting again.

    Per replica, unlike the tenant limit: a guesser spread over N replicas gets N × the
    failures, which still leaves 256-bit secrets unguessable, and failing closed on a lost
    database connection would lock every caller out.
    """

    def __init__(
        self,
        per_address: int | None = None,
        per_key: int | None = None,
        window_s: float | None = None,
        max_subjects: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        lim = limits()
        self.per_address = per_address or lim.auth_failures_per_address
        self.per_key = per_key or lim.auth_failures_per_key
        self.window_s = window_s or lim.auth_failure_window_s
        self.max_subjects = max_subjects or lim.auth_throttle_subjects
        self.clock = clock
        self._table: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def check(self, subjects: Iterable[str]) -> None:
        """Raise RESOURCE_EXHAUSTED if any subject is over its failures in this window."""
        now = self.clock()
        for subject in subjects:
            entry = self._table.get(subject)
            if entry is None:
                continue
            start, count = entry
            if now - start >= self.window_s:
                continue
            by_address = subject.startswith("addr:")
            most = self.per_address if by_address else self.per_key
            if count >= most:
                retry = start + self.window_s - now
                what = "this address" if by_address else "this key"
                raise ApiError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"too many failed authentication attempts for {what}; "
                    f"retry in {max(1, round(retry))}s",
                    quota_violations=[
                        (subject, f"{most} failed attempts per {self.window_s:.0f}s")
                    ],
                    reason="AUTH_THROTTLED",
                    retry_after_s=retry,
                )

    def failed(self, subjects: Iterable[str]) -> None:
        now = self.clock()
        for subject in subjects:
            start, count = self._table.pop(subject, (now, 0))
            if now - start >= self.window_s:
                start, count = now, 0
            self._table[subject] = (start, count + 1)
            while len(self._table) > self.max_subjects:
                self._table.popitem(last=False)
