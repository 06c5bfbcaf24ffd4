"""The retention service's start-up: the deletion schedule, erasure receipts as events, the
lifecycle consumer and the sweeper (inside the start-up hook, so the port opens first)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, timedelta

from headshots.v1 import headshots_pb2, jobs_pb2
from services.common.bus import ids
from services.common.bus.consumer import JobContext, Worker
from services.common.grpc.server import ServiceHost
from services.common.keys.keyring import Keyring, load_master_key
from services.common.resources import open_resources
from services.policy.names import order_name
from services.retention.clock import SystemClock
from services.retention.core import Retention
from services.retention.servicer import RetentionServicer
from services.retention.settings import RetentionSettings

log = logging.getLogger("services.retention")


async def start_retention(
    host: ServiceHost, settings: RetentionSettings, servicer: RetentionServicer
) -> None:
    # 1. Connections; retention owns the keyring's destruction, so it needs the master key.
    if settings.master_key is None:
        raise SystemExit("HS_MASTER_KEY is required: retention destroys per-order data keys")
    res = await host.enter(
        open_resources(settings, "retention", schemas=["retention"], erasures=False)
    )
    assert res.engine is not None
    engine, blobs, bus = res.engine, res.blobs, res.bus
    keyring = Keyring(engine, load_master_key(settings), settings.master_key_id)

    # 2. Receipts as events, the schedule, the API.
    async def notify(tenant_id: str, order_id: str, what: str, entries: list) -> None:
        kind = "erased" if what == "ERASED" else "deleted"
        event = jobs_pb2.OrderEvent(
            event_id=ids.retention_event_id(order_id, what),
            tenant_id=tenant_id,
            order_id=order_id,
            stage=headshots_pb2.STAGE_RETENTION,
            kind=jobs_pb2.EVENT_KIND_DELETED,
            detail=what,
            deletion=headshots_pb2.DeletionReceipt(
                order=order_name(tenant_id, order_id), entries=entries
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
    servicer.retention = retention

    # 3. The lifecycle consumer and the sweeper.

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

    host.on_shutdown(lifecycle.stop)
