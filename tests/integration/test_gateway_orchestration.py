"""Orders driven by events over a real nats-server: duplicated events change an order once,
a train job deleted from the stream is re-queued by the reconciler and the order completes,
and two concurrent watchers see every change once and in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import jobs_pb2
from services.common.bus import ids
from services.common.bus.ids import JOBS_STREAM
from services.gateway.orchestrator import DURABLE
from services.gateway.orders import TRANSITIONS
from tests.support.gateway_harness import GatewayUnderTest, SimWorkers, start_gateway

pytestmark = pytest.mark.integration
FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"


@pytest.fixture(scope="module")
async def gw(postgres, nats_server, tmp_path_factory) -> AsyncIterator[GatewayUnderTest]:
    g = await start_gateway(
        postgres.url,
        nats_server.url,
        tmp_path_factory.mktemp("gworch"),
        stuck_after_s=1.5,
        reconcile_interval_s=0.3,
        watch_poll_s=0.5,
    )
    yield g
    await g.stop()


def md(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


async def submitted_order(gw: GatewayUnderTest) -> tuple[pb.Order, str]:
    tenant, secret = await gw.tenant()
    api = gw.api()
    order = await api.CreateOrder(
        pb.CreateOrderRequest(
            parent=f"tenants/{tenant}", order=pb.Order(candidate_count=10, result_count=3)
        ),
        metadata=md(secret),
    )
    files = sorted((FACES / "others").glob("*.jpg"))[:8]

    async def stream() -> AsyncIterator[pb.UploadPhotosRequest]:
        for i, f in enumerate(files):
            yield pb.UploadPhotosRequest(
                parent=order.name if i == 0 else "", filename=f.name, data=f.read_bytes()
            )

    await api.UploadPhotos(stream(), metadata=md(secret))
    order = await api.SubmitOrder(pb.SubmitOrderRequest(name=order.name), metadata=md(secret))
    return order, secret


async def consumed(gw: GatewayUnderTest) -> None:
    """Until the gateway's event consumer has nothing pending or unacked."""
    async with asyncio.timeout(10):
        while await gw.bus.consumer_lag("EVENTS", DURABLE):  # noqa: ASYNC110 - polling NATS
            await asyncio.sleep(0.05)


async def train_job_seqs(gw: GatewayUnderTest, order_id: str) -> list[int]:
    info = await gw.bus.js.stream_info(JOBS_STREAM)
    seqs = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await gw.bus.js.get_msg(JOBS_STREAM, seq)
        except Exception:
            continue
        if (
            msg.subject == "jobs.train"
            and jobs_pb2.TrainJob.FromString(msg.data).order_id == order_id
        ):
            seqs.append(seq)
    return seqs


async def get(gw: GatewayUnderTest, name: str, secret: str) -> pb.Order:
    return await gw.api().GetOrder(pb.GetOrderRequest(name=name), metadata=md(secret))


async def test_duplicated_event_advances_the_order_once(gw: GatewayUnderTest) -> None:
    order, secret = await submitted_order(gw)
    order_id = order.name.rsplit("/", 1)[1]
    tenant_id = order.name.split("/")[1]
    event = jobs_pb2.OrderEvent(
        event_id=f"{order_id}:training:progress:1",
        tenant_id=tenant_id,
        order_id=order_id,
        stage=pb.STAGE_TRAINING,
        kind=jobs_pb2.EVENT_KIND_PROGRESS,
        done=1,
        total=4,
    )
    # Two publishes with different message ids: JetStream's dedup does not catch them,
    # the gateway's event ledger must.
    await gw.bus.publish("events.training.progress", event, msg_id="dup-a-" + order_id)
    await gw.bus.publish("events.training.progress", event, msg_id="dup-b-" + order_id)
    await consumed(gw)
    after = await get(gw, order.name, secret)
    assert after.state == pb.ORDER_STATE_TRAINING
    assert after.version == order.version + 1
    assert after.progress.done == 1 and after.progress.total == 4
    # Applying it once more directly changes nothing either.
    assert await gw.app.orchestrator.apply("events.training.progress", event) is False
    assert (await get(gw, order.name, secret)).version == after.version


async def test_lost_train_job_is_requeued_and_the_order_completes(gw: GatewayUnderTest) -> None:
    order, secret = await submitted_order(gw)
    order_id = order.name.rsplit("/", 1)[1]
    async with asyncio.timeout(10):
        while not (seqs := await train_job_seqs(gw, order_id)):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    for seq in seqs:
        await gw.bus.js.delete_msg(JOBS_STREAM, seq)  # the job is lost
    assert await train_job_seqs(gw, order_id) == []
    workers = SimWorkers(gw.bus, gw.blobs)
    await workers.start()
    gw.extra.append(workers)
    details = []
    last = order
    async with asyncio.timeout(60):
        async for update in gw.api().WatchOrder(
            pb.WatchOrderRequest(name=order.name), metadata=md(secret)
        ):
            details.append(update.order.progress.detail)
            last = update.order
    assert last.state == pb.ORDER_STATE_READY, last.failure_reason
    assert any("train job went missing; re-queued (1)" in d for d in details)
    # Processed exactly once, as attempt 1: a new message id (the lost one's is still inside
    # JetStream's duplicate window, which would drop a re-publish under the same id).
    mine = [j for j in workers.train_jobs if j.order_id == order_id]
    assert len(mine) == 1 and mine[0].job_id == ids.train_job_id(order_id, 1)
    assert ids.base_job_id(mine[0].job_id) == ids.train_job_id(order_id)
    assert len(mine[0].photo_keys) == 8
    results = await gw.api().ListResults(
        pb.ListResultsRequest(parent=order.name), metadata=md(secret)
    )
    assert len(results.results) == 3


async def test_two_watchers_see_every_change_once_in_order(gw: GatewayUnderTest) -> None:
    if not any(isinstance(x, SimWorkers) for x in gw.extra):
        workers = SimWorkers(gw.bus, gw.blobs)
        await workers.start()
        gw.extra.append(workers)
    order, secret = await submitted_order(gw)

    async def watch() -> list[pb.WatchOrderResponse]:
        return [
            u
            async for u in gw.api().WatchOrder(
                pb.WatchOrderRequest(name=order.name), metadata=md(secret)
            )
        ]

    async with asyncio.timeout(60):
        first, second = await asyncio.gather(watch(), watch())
    for seen in (first, second):
        seqs = [u.sequence for u in seen]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no repeat
        assert seqs[0] <= order.version + 1
        assert seen[-1].order.state == pb.ORDER_STATE_READY
        states = [seen[0].order.state]
        for u in seen[1:]:
            if u.order.state != states[-1]:
                assert u.order.state in TRANSITIONS[states[-1]]
                states.append(u.order.state)
        assert states[-3:] == [
            pb.ORDER_STATE_GENERATING,
            pb.ORDER_STATE_FILTERING,
            pb.ORDER_STATE_READY,
        ]
        fractions = [u.order.progress.fraction for u in seen]
        assert fractions[-1] == 1.0
    # Both watchers saw every change from the later of their two starts on, identically.
    common = max(a.sequence for a in (first[0], second[0]))
    a = [(u.sequence, u.order.state) for u in first if u.sequence >= common]
    b = [(u.sequence, u.order.state) for u in second if u.sequence >= common]
    assert a == b


async def test_photos_deleted_by_policy_take_their_facts_with_them(
    gw: GatewayUnderTest, postgres
) -> None:
    """The face descriptors and signatures stored with the photos are biometric data: when
    retention reports the photos deleted, nothing measured from them stays."""
    import sqlalchemy as sa

    from services.common.db import engine as db
    from services.gateway.tables import photos

    order, _secret = await submitted_order(gw)
    order_id, tenant_id = order.name.rsplit("/", 1)[1], order.name.split("/")[1]
    engine = db.create_engine(postgres.url)

    async def facts() -> list[bool]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.select(photos.c.selfie_facts).where(photos.c.order_id == order_id)
            )
            return [r.selfie_facts is not None for r in rows]

    try:
        assert await facts() == [True] * 8
        event = jobs_pb2.OrderEvent(
            event_id=ids.retention_event_id(order_id, "PHOTOS"),
            tenant_id=tenant_id,
            order_id=order_id,
            stage=pb.STAGE_RETENTION,
            kind=jobs_pb2.EVENT_KIND_DELETED,
            detail="PHOTOS",
        )
        assert await gw.app.orchestrator.apply("events.retention.deleted", event)
        assert await facts() == [False] * 8
    finally:
        await engine.dispose()
