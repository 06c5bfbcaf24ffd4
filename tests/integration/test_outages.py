"""Dependency outages and dead workers, with real servers: a job waits out a PostgreSQL
outage inside its delivery (no delivery spent, no dead letter) and is dead-lettered with
cause "dependency" only past its time budget; the gateway answers UNAVAILABLE with a retry
hint while PostgreSQL is stopped and recovers by itself; dead letters are reconciled with
their orders and the operator's CLI counts, replays and purges them; a consumer with work
and no live worker is reported and recovers; the job of a worker that died is redelivered
with a WARNING."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devstack.embedded import NatsServer, Postgres
from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import jobs_pb2
from services.common import metrics
from services.common.bus import ids
from services.common.bus.client import Bus
from services.common.bus.consumer import JobContext, PermanentError, Worker
from services.common.bus.deadletter import (
    build_dead_letter,
    cause_of,
    list_dead_letters,
    publish_dead_letter,
)
from services.common.bus.handler import JobHandler, Stage
from services.common.bus.liveness import ConsumerWatch
from services.common.db.engine import create_engine
from services.common.outages import RetryPolicy
from services.gateway.tables import orders
from tests.support.bus_helpers import running
from tests.support.gateway_harness import GatewayUnderTest, start_gateway

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def own_pg(tmp_path: Path) -> AsyncIterator[Postgres]:
    """A PostgreSQL of this test alone: the tests stop it."""
    pg = Postgres(tmp_path / "pg").start()
    yield pg
    pg.stop()


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    server = NatsServer(tmp_path / "nats").start()
    b = await Bus.connect(server.url, "outage-test", publish_retry_s=5)
    await b.ensure_streams()
    yield b
    await b.close()
    server.stop()


def train_job(order: str) -> jobs_pb2.TrainJob:
    return jobs_pb2.TrainJob(job_id=ids.train_job_id(order), tenant_id="t", order_id=order)


async def test_job_waits_out_a_database_outage_in_one_delivery(own_pg: Postgres, bus: Bus) -> None:
    engine = create_engine(own_pg.url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("create table done (order_id text primary key)"))
    deliveries: list[int] = []

    async def handler(ctx: JobContext) -> None:
        deliveries.append(ctx.num_delivered)
        job = ctx.parse(jobs_pb2.TrainJob)
        async with engine.begin() as conn:
            await conn.execute(sa.text("insert into done values (:o)"), {"o": job.order_id})

    retries = metrics.JOB_RETRIES.labels("trainer", ids.TRAIN, "dependency")
    before = retries._value.get()
    # max_deliver=2: before, an outage of a second burnt both deliveries at once.
    worker = Worker(
        bus,
        ids.TRAIN,
        "trainer",
        handler,
        ack_wait=2,
        max_deliver=2,
        retry=RetryPolicy(budget_s=60, base_s=0.2, cap_s=1.0),
    )
    async with running(worker, drain=True):
        own_pg.stop()
        await bus.publish(ids.TRAIN, train_job("o1"), msg_id="o1:train")
        async with asyncio.timeout(20):
            while retries._value.get() < before + 3:  # noqa: ASYNC110 - watching a counter
                await asyncio.sleep(0.1)
        # Longer than the ack wait: in-progress acks keep the delivery while it waits.
        await asyncio.sleep(3)
        own_pg.start()
        async with asyncio.timeout(20):
            while await bus.consumer_lag(ids.JOBS_STREAM, "trainer"):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    async with engine.connect() as conn:
        done = (await conn.execute(sa.text("select order_id from done"))).scalars().all()
    await engine.dispose()
    assert done == ["o1"]
    assert set(deliveries) == {1}, deliveries  # every try inside the first delivery
    assert len(deliveries) >= 4
    assert await list_dead_letters(bus) == []


async def test_outage_past_the_budget_dead_letters_with_its_cause(bus: Bus) -> None:
    async def handler(ctx: JobContext) -> None:
        raise ConnectionRefusedError(111, "Connection refused")  # the database never answers

    worker = Worker(
        bus,
        ids.TRAIN,
        "trainer",
        handler,
        ack_wait=5,
        max_deliver=3,
        retry=RetryPolicy(budget_s=1.5, base_s=0.2, cap_s=0.5),
    )
    async with running(worker, drain=True):
        await bus.publish(ids.TRAIN, train_job("o2"), msg_id="o2:train")
        async with asyncio.timeout(20):
            while not await list_dead_letters(bus):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    [dead] = await list_dead_letters(bus)
    assert cause_of(dead.reason) == "dependency", dead.reason
    assert dead.deliveries == 1 and "unavailable for" in dead.reason


async def test_deadletters_cli_counts_replays_and_purges(bus: Bus, tmp_path: Path) -> None:
    seen: list[str] = []

    async def poison(ctx: JobContext) -> None:
        job = ctx.parse(jobs_pb2.TrainJob)
        seen.append(job.order_id)
        if len(seen) <= 2:
            raise PermanentError("bad photos")

    worker = Worker(bus, ids.TRAIN, "trainer", poison, ack_wait=5, max_deliver=2)
    async with running(worker, drain=True):
        for order in ("o3", "o4"):
            await bus.publish(ids.TRAIN, train_job(order), msg_id=f"{order}:train")
        async with asyncio.timeout(20):
            while len(await list_dead_letters(bus)) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        url = bus.nc.connected_url
        assert url is not None
        nats_url = f"nats://{url.hostname}:{url.port}"

        def cli(*args: str) -> str:
            out = subprocess.run(
                [sys.executable, "-m", "services.common.bus.deadletters", *args],
                cwd=ROOT,
                env={**os.environ, "HS_NATS_URL": nats_url, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr[-2000:]
            return out.stdout

        listed = cli("list", "-v")
        assert "2 dead letter(s)" in listed
        assert "     2  permanent   jobs.train" in listed, listed
        assert "order=o3" in listed and "order=o4" in listed
        assert "replayed 1" in cli("replay", "--order", "o3")
        async with asyncio.timeout(20):
            while seen.count("o3") < 2:  # noqa: ASYNC110 - the replay reaches the worker
                await asyncio.sleep(0.1)
        assert [d for d in await list_dead_letters(bus) if b"o3" in d.payload] == []
        assert "purged 1" in cli("purge", "--yes", "--cause", "permanent")
    assert await list_dead_letters(bus) == []
    assert seen.count("o4") == 1


@pytest.fixture
async def gw_own_pg(own_pg: Postgres, tmp_path: Path) -> AsyncIterator[GatewayUnderTest]:
    server = NatsServer(tmp_path / "gw-nats").start()
    g = await start_gateway(
        own_pg.url,
        server.url,
        tmp_path,
        stuck_after_s=600,
        reconcile_interval_s=0.5,
        watch_poll_s=0.5,
    )
    yield g
    await g.stop()
    server.stop()


def md(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


async def test_get_order_says_unavailable_while_postgres_is_down(
    gw_own_pg: GatewayUnderTest, own_pg: Postgres
) -> None:
    gw = gw_own_pg
    tenant, secret = await gw.tenant()
    order = await gw.api().CreateOrder(
        pb.CreateOrderRequest(parent=f"tenants/{tenant}", order=pb.Order(candidate_count=4)),
        metadata=md(secret),
    )
    own_pg.stop()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.api().GetOrder(pb.GetOrderRequest(name=order.name), metadata=md(secret))
        err = caught.value
        assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
        status = rpc_status.from_call(err)
        assert status is not None
        hints = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert len(hints) == 1
        info = error_details_pb2.RetryInfo()
        hints[0].Unpack(info)
        assert info.retry_delay.ToNanoseconds() > 0
        # The REST face of the same call says 503 with Retry-After.
        import httpx

        async with httpx.AsyncClient() as http:
            resp = await http.get(
                f"{gw.rest}/v1/{order.name}", headers={"authorization": f"Bearer {secret}"}
            )
        assert resp.status_code == 503, resp.text
        assert int(resp.headers["retry-after"]) >= 1
    finally:
        own_pg.start()
    again = await gw.api().GetOrder(pb.GetOrderRequest(name=order.name), metadata=md(secret))
    assert again.name == order.name


async def test_dead_letters_of_a_ready_order_are_cleared_and_of_a_failed_one_kept(
    gw_own_pg: GatewayUnderTest,
) -> None:
    gw = gw_own_pg
    tenant, secret = await gw.tenant()
    names = []
    for _ in range(2):
        o = await gw.api().CreateOrder(
            pb.CreateOrderRequest(parent=f"tenants/{tenant}", order=pb.Order(candidate_count=4)),
            metadata=md(secret),
        )
        names.append(o.name)
    ready_id, failed_id = (n.rsplit("/", 1)[1] for n in names)
    async with gw.app.engine.begin() as conn:
        for order_id, state in ((ready_id, "READY"), (failed_id, "FAILED")):
            await conn.execute(
                sa.update(orders).where(orders.c.order_id == order_id).values(state=state)
            )
    for seq, order_id in ((1, ready_id), (2, failed_id), (3, "o-gone")):
        job = jobs_pb2.GenerateJob(
            job_id=ids.generate_job_id(order_id, 0), tenant_id=tenant, order_id=order_id
        )
        dead = build_dead_letter(
            stream=ids.JOBS_STREAM,
            consumer="generator",
            stream_seq=1000 + seq,
            subject=ids.GENERATE,
            payload=job.SerializeToString(),
            deliveries=3,
            reason="crashed: no ack after 3 deliveries",
        )
        await publish_dead_letter(gw.bus, dead)
    left = await gw.app.reconciler.reconcile_dead_letters()
    assert left["crashed"] == 1
    remaining = await list_dead_letters(gw.bus)
    owners = [jobs_pb2.GenerateJob.FromString(d.payload).order_id for d in remaining]
    assert owners == [failed_id]


async def test_consumer_with_work_and_no_worker_is_reported_stalled(bus: Bus) -> None:
    async def handler(ctx: JobContext) -> None:
        return None

    worker = Worker(bus, ids.TRAIN, "trainer", handler, ack_wait=1, fetch_timeout=0.5)
    await worker.ensure_consumer()  # the durable exists; no worker runs
    watch = ConsumerWatch(bus, (ids.JOBS_STREAM,))
    stalled = metrics.CONSUMER_STALLED.labels(ids.JOBS_STREAM, "trainer")
    [state] = await watch.check()
    assert not state.stalled and stalled._value.get() == 0  # nothing to do: fine
    await bus.publish(ids.TRAIN, train_job("o5"), msg_id="o5:train")
    [state] = await watch.check()
    assert state.stalled and state.work == 1 and stalled._value.get() == 1
    async with running(worker, drain=True):
        async with asyncio.timeout(10):
            while (await watch.check())[0].stalled:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        assert stalled._value.get() == 0
        assert (await watch.check())[0].work == 0


class RecordingTrainer(JobHandler[jobs_pb2.TrainJob]):
    STAGE = Stage("training", pb.STAGE_TRAINING, ids.TRAIN, "trainer")
    JOB = jobs_pb2.TrainJob

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.ran: list[tuple[str, int]] = []

    async def run(self, job: jobs_pb2.TrainJob, ctx: JobContext) -> None:
        self.ran.append((job.job_id, ctx.num_delivered))


async def test_a_job_of_a_killed_worker_is_redelivered_with_a_warning(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    trainer = RecordingTrainer(bus)
    worker = trainer.consumer(ack_wait=1, max_deliver=3)
    await worker.ensure_consumer()
    job = train_job("o6")
    await bus.publish(ids.TRAIN, job, msg_id=job.job_id)
    # A worker that takes the job and dies: nothing ever answers for this delivery.
    dead = await bus.js.pull_subscribe_bind("trainer", stream=ids.JOBS_STREAM)
    [taken] = await dead.fetch(1, timeout=5)
    assert taken.metadata.num_delivered == 1
    await dead.unsubscribe()
    with caplog.at_level("WARNING", logger="services.common.bus.handler"):
        async with running(worker, drain=True):
            async with asyncio.timeout(20):
                while not trainer.ran:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
    assert trainer.ran == [(job.job_id, 2)]
    warned = [r for r in caplog.records if "redelivered" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
    assert warned[0].fields == {"job": job.job_id, "attempt": 0, "delivery": 2}  # type: ignore[attr-defined]
