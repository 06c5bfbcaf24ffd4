"""Export a JetStream consumer's lag as a Prometheus gauge (what KEDA scales on, visible
to operators in the same units)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.common import metrics
from services.common.bus import Bus

log = logging.getLogger(__name__)


async def report_lag(
    bus: Bus, stream: str, durable: str, stopping: asyncio.Event, interval_s: float = 5.0
) -> None:
    gauge = metrics.QUEUE_LAG.labels(stream, durable)
    while not stopping.is_set():
        try:
            gauge.set(await bus.consumer_lag(stream, durable))
        except Exception as err:  # the consumer may not exist yet, or NATS is restarting
            log.debug("lag of %s/%s unavailable: %r", stream, durable, err)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval_s)
