"""Transactional outbox: a state change and the message it causes commit together.

The service writes its row and an outbox row in one transaction (`enqueue`); `OutboxRelay`
later publishes unpublished rows with `Nats-Msg-Id = msg_id` and marks them sent. A crash
before commit leaves neither; a crash after publish but before marking re-publishes the
same msg id, which JetStream drops inside its 2-minute dedup window. Several relays may run:
each claims rows with `FOR UPDATE SKIP LOCKED`, so a row is published by one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from google.protobuf.message import Message
from opentelemetry import propagate
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    Table,
    Text,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from services.common.outages import RetryPolicy, dependency_down, what_is_down

if TYPE_CHECKING:
    from services.common.bus.client import Bus

log = logging.getLogger(__name__)

BATCH = 100


def _columns() -> list[Column]:
    return [
        Column("id", BigInteger, primary_key=True, autoincrement=True),  # BIGSERIAL
        Column("msg_id", Text, nullable=False, unique=True),
        Column("subject", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False, server_default="{}"),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
        # The order a message belongs to: erasure deletes an order's unsent messages in every
        # schema by these columns, like any other order-scoped row.
        Column("tenant_id", Text, nullable=True),
        Column("order_id", Text, nullable=True),
    ]


def outbox_table(metadata: MetaData, schema: str) -> Table:
    """The `outbox` table in `schema` (each owning service has its own, all of this shape)."""
    table = Table("outbox", metadata, *_columns(), schema=schema)
    # The relay only ever reads unpublished rows in id order: keep that index tiny.
    Index(
        f"ix_{schema}_outbox_unpublished",
        table.c.id,
        postgresql_where=table.c.published_at.is_(None),
    )
    return table


async def enqueue(
    session: AsyncSession | AsyncConnection,
    table: Table,
    subject: str,
    payload: bytes | Message,
    msg_id: str,
    *,
    tenant_id: str | None = None,
    order_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Add a message to the outbox inside the caller's transaction (no commit here).

    The current trace context is stored with it, so the relay's publish continues the trace.
    A msg id already in the outbox is a no-op: the same fact written twice goes out once.
    """
    if not msg_id:
        raise ValueError("outbox message needs a msg_id (it becomes Nats-Msg-Id)")
    data = payload.SerializeToString() if isinstance(payload, Message) else bytes(payload)
    hdrs = dict(headers or {})
    propagate.inject(hdrs)
    await session.execute(
        pg_insert(table)
        .values(
            msg_id=msg_id,
            subject=subject,
            payload=data,
            headers=hdrs,
            tenant_id=tenant_id,
            order_id=order_id,
        )
        .on_conflict_do_nothing(index_elements=[table.c.msg_id])
    )


class OutboxRelay:
    """Publishes committed outbox rows. `await run()` until `await stop()`."""

    def __init__(
        self,
        engine: AsyncEngine,
        table: Table,
        bus: Bus,
        poll_interval: float = 0.2,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.engine = engine
        self.table = table
        self.bus = bus
        self.poll_interval = poll_interval
        # Backoff while the database or the bus is away: no budget (the rows wait for as
        # long as the outage lasts), only the growing, jittered pause between passes.
        self.retry = retry or RetryPolicy(budget_s=1.0, base_s=poll_interval, cap_s=5.0)
        self._stopping = asyncio.Event()
        # Rows this relay published (for metrics, and to show relays never share a row).
        self.published = 0
        # Consecutive failed passes (0 while healthy): the backoff's exponent.
        self.failures = 0

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                sent = await self.relay_once()
            except Exception as err:
                sent = 0
                self._failed(err)
            else:
                if self.failures:
                    log.warning("outbox relay resumed after %d failed passes", self.failures)
                self.failures = 0
            if sent < BATCH:
                pause = self.retry.delay(self.failures) if self.failures else self.poll_interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)

    def _failed(self, err: Exception) -> None:
        """Rows stay unpublished and go out on a later pass. An outage is logged once, when
        it starts, without a traceback; any other failure is a fault and logged in full."""
        self.failures += 1
        if not dependency_down(err):
            log.exception("outbox relay pass failed")
        elif self.failures == 1:
            log.warning("outbox relay paused: the %s is unavailable (%s)", what_is_down(err), err)

    async def stop(self) -> None:
        self._stopping.set()

    async def relay_once(self) -> int:
        """Publish one batch of unpublished rows; returns how many were published."""
        t = self.table
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(t.c.id, t.c.msg_id, t.c.subject, t.c.payload, t.c.headers)
                    .where(t.c.published_at.is_(None))
                    .order_by(t.c.id)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            done: list[int] = []
            failure: Exception | None = None
            for row in rows:
                try:
                    await self.bus.publish(
                        row.subject, bytes(row.payload), msg_id=row.msg_id, headers=row.headers
                    )
                except Exception as err:
                    # Stop here to keep id order; the rest goes out on a later pass.
                    failure = err
                    break
                done.append(row.id)
            if done:
                # Committed together with what did go out, even if a later publish failed.
                await conn.execute(
                    update(t).where(t.c.id.in_(done)).values(published_at=func.now())
                )
        self.published += len(done)
        if failure is not None:
            raise failure
        return len(done)
