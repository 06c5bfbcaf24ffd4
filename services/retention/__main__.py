"""`python -m services.retention`: erasure API, lifecycle consumer and the deletion sweeper."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, timedelta

from headshots.v1 import headshots_pb2, internal_pb2_grpc, jobs_pb2
from services.common.bus.client import Bus
from services.common.bus.consumer import JobContext, Worker
from services.common.db import engine as db
from services.common.grpc.server import ServiceHost, run_service
from services.common.keys.keyring import Keyring, load_master_key
from services.common.storage.factory import open_blob_store
from services.retention.clock import SystemClock
from services.retention.core import Retention
from services.retention.servicer import RetentionServicer
from services.retention.settings import RetentionSettings

log = logging.getLogger("services.retention")


async def main() -> None:
    settings = RetentionSettings(service_name="retention")
    if settings.grpc_port == 0:
        settings.grpc_port = 50055
    host = ServiceHost(settings)
    url = db.database_url(settings)
    await db.migrate(url, "keyring")
    await db.migrate(url, "retention")
    engine = db.create_engine(url)
    if settings.master_key is None:
        raise SystemExit("HS_MASTER_KEY is required: retention destroys per-order data keys")
    keyring = Keyring(engine, load_master_key(settings), settings.master_key_id)
    blobs = open_blob_store(settings, engine=engine)
    bus = await Bus.connect(settings.nats_url, name="retention")
    await bus.ensure_streams(replicas=settings.jetstream_replicas)

    async def notify(tenant_id: str, order_id: str, what: str, entries: list) -> None:
        kind = "erased" if what == "ERASED" else "deleted"
        event = jobs_pb2.OrderEvent(
            event_id=f"{order_id}:retention:{what.lower()}",
            tenant_id=tenant_id,
            order_id=order_id,
            stage=headshots_pb2.STAGE_RETENTION,
            kind=jobs_pb2.EVENT_KIND_DELETED,
            detail=what,
            deletion=headshots_pb2.DeletionReceipt(
                order=f"tenants/{tenant_id}/orders/{order_id}", entries=entries
            ),
        )
        event.time.GetCurrentTime()
        await bus.publish(f"events.retention.{kind}", event, msg_id=event.event_id)

    retention = Retention(
        engine,
        blobs,
        keyring,
        clock=SystemClock(timedelta(days=settings.clock_offset_days)),
        notify=notify,
        step_delay_s=settings.debug_step_delay_s,
    )
    host.add(
        internal_pb2_grpc.add_RetentionServiceServicer_to_server,
        RetentionServicer(retention),
        "headshots.v1.RetentionService",
    )

    async def on_lifecycle(ctx: JobContext) -> None:
        event = ctx.parse(jobs_pb2.LifecycleEvent)
        state = headshots_pb2.OrderState.Name(event.state).removeprefix("ORDER_STATE_")
        at = event.time.ToDatetime(tzinfo=UTC) if event.HasField("time") else retention.clock.now()
        await retention.on_lifecycle(
            event.tenant_id, event.order_id, state, at, event.photo_retention_days, event.keep_model
        )

    lifecycle = Worker(bus, "events.lifecycle.>", "retention-lifecycle", on_lifecycle, ack_wait=30)

    async def sweep_forever() -> None:
        while not host.stopping.is_set():
            try:
                report = await retention.sweep_once()
                if report.deleted:
                    log.info("sweep", extra={"fields": {"deleted": dict(report.deleted)}})
            except Exception:
                log.exception("sweep failed; retrying next interval")
            try:
                await asyncio.wait_for(host.stopping.wait(), timeout=settings.sweep_interval_s)
            except TimeoutError:
                pass

    host.background(lifecycle.run)
    host.background(sweep_forever)

    async def shutdown() -> None:
        await lifecycle.stop(drain=True)
        await bus.close()
        await engine.dispose()

    host.on_shutdown(shutdown)
    await host.run()


if __name__ == "__main__":
    run_service(main)
