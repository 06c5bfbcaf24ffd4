"""The outbox relay while its database is away: it backs off instead of polling every
0.2 s, says so once (no traceback per pass), and says when it is back."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from services.common.bus.outbox import OutboxRelay, outbox_table
from services.common.outages import RetryPolicy


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CountingRelay(OutboxRelay):
    passes = 0

    async def relay_once(self) -> int:
        self.passes += 1
        return await super().relay_once()


async def test_a_relay_without_its_database_backs_off_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_async_engine(f"postgresql+asyncpg://hs@127.0.0.1:{closed_port()}/hs")
    table = outbox_table(sa.MetaData(schema="t"), "t")
    # No bus: a pass fails at the database before it would publish anything.
    relay = CountingRelay(engine, table, None, 0.2, RetryPolicy(1.0, 0.2, 1.6))  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, "services.common.bus.outbox")
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(3.0)
    await relay.stop()
    await task
    await engine.dispose()
    # At a fixed 0.2 s poll that is ~15 passes; backing off 0.1-0.2, 0.2-0.4, 0.4-0.8,
    # 0.8-1.6 s and so on leaves room for at most 7.
    assert 2 <= relay.passes <= 7, relay.passes
    records = [r for r in caplog.records if r.name == "services.common.bus.outbox"]
    assert len(records) == 1
    assert "database is unavailable" in records[0].getMessage()
    assert records[0].exc_info is None
    assert relay.failures == relay.passes
