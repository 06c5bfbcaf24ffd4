"""Transactional outbox against a real PostgreSQL and a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Column, Integer, MetaData, Table, Text, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from devstack.embedded import NatsServer, Postgres
from services.common.bus.client import Bus
from services.common.bus.ids import EVENTS_STREAM
from services.common.bus.outbox import OutboxRelay, enqueue, outbox_table
from tests.support.bus_helpers import kill_hard, spawn_python

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    server = NatsServer(tmp_path / "nats").start()
    b = await Bus.connect(server.url, name="outbox-test")
    await b.ensure_streams()
    yield b
    await b.close()
    server.stop(kill=True)


class Tables:
    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.metadata = MetaData()
        self.orders = Table(
            "orders",
            self.metadata,
            Column("id", Text, primary_key=True),
            Column("state", Text, nullable=False),
            Column("version", Integer, nullable=False),
            schema=schema,
        )
        self.outbox = outbox_table(self.metadata, schema)


@pytest.fixture
async def db(postgres: Postgres) -> AsyncIterator[tuple[AsyncEngine, Tables]]:
    """A fresh schema per test in the session's PostgreSQL (conftest `postgres`)."""
    tables = Tables(f"t_{uuid.uuid4().hex[:10]}")
    engine = create_async_engine(postgres.url)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{tables.schema}"'))
        await conn.run_sync(tables.metadata.create_all)
    yield engine, tables
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{tables.schema}" CASCADE'))
    await engine.dispose()


async def count(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def event_ids(bus: Bus) -> list[str]:
    """Nats-Msg-Id of every message in EVENTS, in stream order."""
    info = await bus.js.stream_info(EVENTS_STREAM)
    ids: list[str] = []
    if info.state.messages == 0:
        return ids
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        ids.append((msg.headers or {})["Nats-Msg-Id"])
    return ids


CRASHING_WRITER = """
import asyncio, sys
from sqlalchemy import Column, Integer, MetaData, Table, Text, insert
from sqlalchemy.ext.asyncio import create_async_engine
from services.common.bus.outbox import enqueue, outbox_table

async def main(url, schema):
    md = MetaData()
    orders = Table("orders", md, Column("id", Text, primary_key=True),
                   Column("state", Text), Column("version", Integer), schema=schema)
    outbox = outbox_table(md, schema)
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        await conn.begin()
        await conn.execute(insert(orders).values(id="o1", state="TRAINING", version=1))
        await enqueue(conn, outbox, "events.training.started", b"started", "o1:training:started")
        print("written, not committed", flush=True)
        await asyncio.sleep(3600)  # killed here, before COMMIT

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_crash_before_commit_leaves_neither_state_nor_event(
    db: tuple[AsyncEngine, Tables], postgres: Postgres, bus: Bus
) -> None:
    engine, t = db
    child = spawn_python(CRASHING_WRITER, postgres.url, t.schema)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        assert "written" in line, line
    finally:
        kill_hard(child)
    assert await count(engine, t.orders) == 0
    assert await count(engine, t.outbox) == 0
    assert await OutboxRelay(engine, t.outbox, bus).relay_once() == 0
    assert await event_ids(bus) == []


async def test_committed_events_are_published_once_by_two_relays(
    db: tuple[AsyncEngine, Tables], bus: Bus
) -> None:
    engine, t = db
    async with engine.begin() as conn:
        for i in range(30):
            await conn.execute(t.orders.insert().values(id=f"o{i}", state="TRAINING", version=1))
            await enqueue(
                conn,
                t.outbox,
                "events.training.started",
                f"o{i}".encode(),
                f"o{i}:training:started",
            )
    # Nothing is published until a relay runs (it starts "later").
    assert await event_ids(bus) == []
    relays = [OutboxRelay(engine, t.outbox, bus, poll_interval=0.05) for _ in range(2)]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        async with engine.connect() as conn:

            async def unpublished() -> int:
                q = select(func.count()).where(t.outbox.c.published_at.is_(None))
                return int((await conn.execute(q)).scalar_one())

            for _ in range(200):
                if await unpublished() == 0:
                    break
                await conn.rollback()  # fresh snapshot
                await asyncio.sleep(0.05)
    finally:
        for r in relays:
            await r.stop()
        await asyncio.gather(*tasks)
    ids = await event_ids(bus)
    assert ids == [f"o{i}:training:started" for i in range(30)]  # each once, in order
    # SKIP LOCKED: no row went out through both relays (dedup alone would hide that).
    assert sum(r.published for r in relays) == 30
    assert await count(engine, t.orders) == 30


async def test_relay_continues_the_trace_of_the_enqueuing_request(
    db: tuple[AsyncEngine, Tables], bus: Bus
) -> None:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine, t = db
    with trace.get_tracer("test").start_as_current_span("CreateOrder") as request:
        async with engine.begin() as conn:
            await enqueue(conn, t.outbox, "events.lifecycle.created", b"x", "o1:lifecycle:created")
    relay = OutboxRelay(engine, t.outbox, bus)
    assert await relay.relay_once() == 1
    assert await relay.relay_once() == 0  # marked published
    [publish] = [s for s in exporter.get_finished_spans() if s.name.startswith("publish")]
    assert publish.context.trace_id == request.get_span_context().trace_id
    msg = await bus.js.get_msg(EVENTS_STREAM, 1)
    assert f"{request.get_span_context().trace_id:032x}" in (msg.headers or {})["traceparent"]


async def test_relay_keeps_rows_while_nats_is_down_and_sends_them_after(
    db: tuple[AsyncEngine, Tables], tmp_path: Path
) -> None:
    engine, t = db
    server = NatsServer(tmp_path / "nats2").start()
    bus = await Bus.connect(server.url, name="relay-restart", publish_retry_s=0.5)
    await bus.ensure_streams()
    server.stop()
    async with engine.begin() as conn:
        await enqueue(conn, t.outbox, "events.training.started", b"x", "o1:training:started")
    relay = OutboxRelay(engine, t.outbox, bus)
    with contextlib.suppress(Exception):
        await relay.relay_once()  # publish fails: the row must stay unpublished
    async with engine.connect() as conn:
        row = (await conn.execute(select(t.outbox.c.published_at))).one()
    assert row.published_at is None
    server.start()
    bus.publish_retry_s = 10
    task = asyncio.create_task(relay.run())
    try:
        for _ in range(200):
            if (await bus.js.stream_info(EVENTS_STREAM)).state.messages == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        await relay.stop()
        await task
    assert await event_ids(bus) == ["o1:training:started"]
    await bus.close()
    server.stop(kill=True)
