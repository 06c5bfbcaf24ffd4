"""Rules more than one service relies on, checked where the services meet: the custom-prompt
screen at CreateOrder, erasure of every order row in every schema's outbox, and one id per
job or event whichever service builds it (real PostgreSQL and nats-server)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import jobs_pb2
from services.common.bus import ids
from services.common.bus.handler import JobHandler, Stage
from services.common.bus.outbox import enqueue
from services.common.db import engine as db
from services.common.grpc.errors import details_of
from services.common.keys.keyring import Keyring
from services.common.storage.encrypted import EncryptedBlobStore
from services.common.storage.factory import open_blob_store
from services.filter.tables import outbox as filter_outbox
from services.gateway import orders as om
from services.gateway.tables import outbox as gateway_outbox
from services.policy.prompt_screen import screen_prompt
from services.retention.clock import FixedClock
from services.retention.core import Retention
from services.retention.order_rows import scan_for_order
from tests.support.gateway_harness import GatewayUnderTest, start_gateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def gw(postgres, nats_server, tmp_path_factory) -> AsyncIterator[GatewayUnderTest]:
    g = await start_gateway(postgres.url, nats_server.url, tmp_path_factory.mktemp("gw-rules"))
    yield g
    await g.stop()


async def _train_jobs(gw: GatewayUnderTest) -> int:
    info = await gw.bus.js.stream_info(ids.JOBS_STREAM, subjects_filter=ids.TRAIN)
    return int((info.state.subjects or {}).get(ids.TRAIN, 0))


@pytest.mark.parametrize(
    "prompt", ["n1ke hoodie", "looking like Taylor Swift", "in a Gucci jacket", "a <lora:x> look"]
)
async def test_create_order_refuses_what_the_generator_would_refuse(
    gw: GatewayUnderTest, prompt: str
) -> None:
    tenant, secret = await gw.tenant("prompt")
    md = (("authorization", f"Bearer {secret}"),)
    before = await _train_jobs(gw)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gw.api().CreateOrder(
            pb.CreateOrderRequest(parent=f"tenants/{tenant}", order=pb.Order(custom_prompt=prompt)),
            metadata=md,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = [
        v
        for d in details_of(err.value)
        if isinstance(d, error_details_pb2.BadRequest)
        for v in d.field_violations
    ]
    # The same sentence the generator would have failed the order with, before any GPU work.
    assert [(v.field, v.description) for v in violations] == [
        ("order.custom_prompt", screen_prompt(prompt).reason)
    ]
    listed = await gw.api().ListOrders(
        pb.ListOrdersRequest(parent=f"tenants/{tenant}"), metadata=md
    )
    assert list(listed.orders) == []
    assert await _train_jobs(gw) == before


async def test_an_accepted_prompt_is_kept_as_written(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant("prompt-ok")
    order = await gw.api().CreateOrder(
        pb.CreateOrderRequest(
            parent=f"tenants/{tenant}", order=pb.Order(custom_prompt="navy blazer, soft light")
        ),
        metadata=(("authorization", f"Bearer {secret}"),),
    )
    assert order.custom_prompt == "navy blazer, soft light"


async def test_erasure_leaves_no_row_of_the_order_in_any_outbox(postgres, tmp_path: Path) -> None:
    url = postgres.url
    for schema in ("keyring", "retention", "gateway", "filter"):
        await db.migrate(url, schema)
    engine = db.create_engine(url)
    keyring = Keyring(engine, secrets.token_bytes(32), "master-1")
    blobs = EncryptedBlobStore(open_blob_store(f"file://{tmp_path}"), keyring)
    retention = Retention(engine, blobs, keyring, clock=FixedClock(datetime.now(UTC)))
    tenant, order, other = "acme", "o-" + secrets.token_hex(5), "o-" + secrets.token_hex(5)
    event = jobs_pb2.OrderEvent(event_id="x", tenant_id=tenant, order_id=order)
    try:
        # 1. Unsent messages of the order (and of another order) in two services' outboxes.
        async with engine.begin() as conn:
            for table, o in (
                (gateway_outbox, order),
                (filter_outbox, order),
                (filter_outbox, other),
            ):
                await enqueue(
                    conn,
                    table,
                    "events.x",
                    event,
                    f"{o}:{table.schema}:x",
                    tenant_id=tenant,
                    order_id=o,
                )
        # 2. Erase the order.
        await retention.erase(tenant, order, request_id="req-outbox")
        # 3. Nothing of it anywhere; the other order's message is still there.
        async with engine.connect() as conn:
            assert await scan_for_order(conn, order) == []
            for table in (gateway_outbox, filter_outbox):
                left = await conn.scalar(
                    sa.select(sa.func.count()).select_from(table).where(table.c.order_id == order)
                )
                assert left == 0, table.fullname
            kept = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(filter_outbox)
                .where(filter_outbox.c.order_id == other)
            )
            assert kept == 1
    finally:
        await engine.dispose()


class _Trainer(JobHandler[jobs_pb2.TrainJob]):
    STAGE = Stage("training", pb.STAGE_TRAINING, ids.TRAIN, "trainer")
    JOB = jobs_pb2.TrainJob


def test_one_order_gets_one_id_per_job_and_fact_whoever_builds_it() -> None:
    order = "o-7f3a"
    row = SimpleNamespace(
        tenant_id="acme", order_id=order, photo_retention_days=7, keep_model=False
    )
    # The gateway's lifecycle fact, the retention service's and the ids module agree.
    lifecycle = om.lifecycle_message(row, om.READY)
    assert lifecycle.msg_id == ids.lifecycle_event_id(order, "READY") == f"{order}:lifecycle:ready"
    # A worker's event for the same fact has the same id however often it is built.
    job = jobs_pb2.TrainJob(job_id=ids.train_job_id(order), tenant_id="acme", order_id=order)
    handler = _Trainer(bus=None)  # type: ignore[arg-type]
    first = handler.event(job, "completed", jobs_pb2.EVENT_KIND_COMPLETED)
    again = handler.event(job, "completed", jobs_pb2.EVENT_KIND_COMPLETED)
    assert first.event_id == again.event_id == ids.event_id(order, "training", "completed")
    # Jobs: the submit path, the reconciler and the orchestrator all call the ids module, and a
    # re-queue differs from the lost message (JetStream would drop a duplicate) but names
    # the same job.
    assert ids.train_job_id(order) == f"{order}:train"
    assert ids.train_job_id(order, attempt=1) != ids.train_job_id(order)
    assert ids.base_job_id(ids.train_job_id(order, attempt=2)) == ids.train_job_id(order)
    assert ids.base_job_id(ids.generate_job_id(order, 1, attempt=1)) == ids.generate_job_id(
        order, 1
    )
