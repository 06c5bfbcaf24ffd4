"""Notice erased orders quickly, so long jobs (training, sampling) abandon them in seconds.

Retention publishes `events.retention.erased` after it has destroyed the order's data key.
A worker process keeps a core-NATS subscription (no durable consumer needed: a process that
missed the message while down hits the destroyed key on its next blob read or write anyway)
and checks `is_erased` between steps.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg

from headshots.v1 import jobs_pb2
from services.common.bus.client import Bus

log = logging.getLogger(__name__)
SUBJECT = "events.retention.erased"


class ErasedOrders:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._erased: set[tuple[str, str]] = set()
        self._sub = None

    async def start(self) -> None:
        self._sub = await self._bus.nc.subscribe(SUBJECT, cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        event = jobs_pb2.OrderEvent()
        try:
            event.ParseFromString(msg.data)
        except Exception:
            log.warning("unreadable erasure event ignored")
            return
        self._erased.add((event.tenant_id, event.order_id))
        log.info("order erased; its jobs stop", extra={"fields": {"order": event.order_id}})

    def mark(self, tenant_id: str, order_id: str) -> None:
        self._erased.add((tenant_id, order_id))

    def is_erased(self, tenant_id: str, order_id: str) -> bool:
        return (tenant_id, order_id) in self._erased
