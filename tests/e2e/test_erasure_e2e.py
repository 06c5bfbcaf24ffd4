"""Erasure on request while the trainer works on the order (every service a process).

DeleteOrder answers with a receipt; the trainer notices and abandons the job; afterwards
no adapter appears, and a scan of PostgreSQL and of the blob store finds nothing of the
order but its ledger entries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from clients.sdk import open_channel
from devstack.stack import Stack
from services.common.db import engine as db
from services.retention.order_rows import scan_for_order
from tests.e2e.conftest import Gateway, require_models
from tests.e2e.harness import ORDER_FIELDS, first_event, ids, logs, make_stack, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def slow_training_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Training long enough (thousands of steps) that the erasure lands mid-job."""
    require_models()
    stack = make_stack(tmp_path_factory.mktemp("e2e-erasure"))
    stack.service_env["trainer"].update(HS_TRAINER_STEPS="5000", HS_TRAINER_VALIDATION_EVERY="2500")
    try:
        stack.start(timeout=300)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
async def gateway(slow_training_stack: Stack) -> AsyncIterator[Gateway]:
    async with open_channel(slow_training_stack.procs["gateway"].addr) as channel:
        yield Gateway(slow_training_stack, channel)


def order_files(stack: Stack, order_id: str) -> list[Path]:
    return [p for p in (stack.run_dir / "blobs").rglob("*") if p.is_file() and order_id in str(p)]


async def test_erasing_an_order_while_it_trains(gateway: Gateway, obama_photos: list[Path]) -> None:
    stack = gateway.stack
    tenant, client = await gateway.tenant("erase")
    order = await client.create_order(tenant, display_name="erase mid-training", **ORDER_FIELDS)
    await client.upload_photos(order.name, obama_photos)
    _tenant_id, order_id = ids(order.name)
    assert order_files(stack, order_id), "the photos are stored"

    def training(e: object) -> bool:
        return 0 < e.done < e.total  # type: ignore[attr-defined]

    async with first_event(stack, "events.training.progress", order.name, training) as progress:
        await client.submit(order.name)
        await asyncio.wait_for(progress, 180)

    receipt = await client.erase(order.name)
    entries = {e.data_class: e for e in receipt.entries}
    assert entries["PHOTOS"].object_count == len(obama_photos) - 1  # one is a duplicate
    assert entries["DATA_KEY"].key_id_hash and receipt.complete_time.seconds > 0

    # The trainer notices within seconds and writes nothing more.
    trainer_log = stack.procs["trainer"].log_path
    assert wait_for(lambda: "training abandoned: order erased" in trainer_log.read_text(), 30), (
        logs(stack)
    )
    await asyncio.sleep(3)  # anything the trainer would still write would be there by now
    assert order_files(stack, order_id) == []

    engine = db.create_engine(stack.database_url)
    try:
        async with engine.connect() as conn:
            assert await scan_for_order(conn, order_id) == []
    finally:
        await engine.dispose()

    # The order is gone for its tenant, and no event brings it back.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.get_order(order.name)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
