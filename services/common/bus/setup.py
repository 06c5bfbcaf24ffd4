"""Streams and the workers' durable consumers, declared before any worker runs.

    HS_NATS_URL=... HS_JETSTREAM_REPLICAS=3 python -m services.common.bus.setup

KEDA scales the workers on each durable's lag. Until a worker has started once, its durable
does not exist, and KEDA's nats-jetstream scaler before 2.20 reads a missing consumer as the
stream's whole message count: a fresh install would jump the trainer to its maximum. The
install's setup Job runs this first, so every durable KEDA asks about exists from the start.

A durable created here carries only what cannot change later (name, filter subject, explicit
acks, deliver-all); the worker updates ack_wait, max_deliver and backoff to its own values when
it starts (`Worker.ensure_consumer`). An existing durable is left as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import nats.js.errors
from nats.js import api

from services.common.bus.client import Bus
from services.common.bus.ids import FILTER, GENERATE, JOBS_STREAM, TRAIN
from services.common.settings import ServiceSettings

# Job subject → the durable its worker pulls from (the worker's own constant; checked by
# tests/deploy against each worker and against the KEDA ScaledObjects).
JOB_DURABLES = {TRAIN: "trainer", GENERATE: "generator", FILTER: "filter"}


async def ensure_durables(bus: Bus) -> list[str]:
    """Create each missing job durable; returns the names created."""
    created = []
    for subject, durable in JOB_DURABLES.items():
        try:
            await bus.js.consumer_info(JOBS_STREAM, durable)
            continue
        except nats.js.errors.NotFoundError:
            pass
        await bus.js.add_consumer(
            JOBS_STREAM,
            api.ConsumerConfig(
                name=durable,
                durable_name=durable,
                ack_policy=api.AckPolicy.EXPLICIT,
                filter_subject=subject,
                deliver_policy=api.DeliverPolicy.ALL,
            ),
        )
        created.append(durable)
    return created


async def run(settings: ServiceSettings) -> list[str]:
    bus = await Bus.connect(settings.nats_url, name="bus-setup")
    try:
        await bus.ensure_streams(replicas=settings.jetstream_replicas)
        return await ensure_durables(bus)
    finally:
        await bus.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.common.bus.setup", description=__doc__
    )
    parser.parse_args(argv)
    settings = ServiceSettings(service_name="bus-setup")
    created = asyncio.run(run(settings))
    print(f"streams ready; durables created: {', '.join(created) or 'none (all existed)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
