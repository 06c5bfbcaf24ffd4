"""Is anyone working a durable consumer? Seen from JetStream's consumer info alone.

A live worker shows in one of two ways: an idle one keeps a pull request waiting
(`num_waiting > 0`: workers fetch with a short timeout in a loop), and a busy one sends an
in-progress ack every `ack_wait / 3` while its handler runs, which moves the consumer's
`delivered.last_active`. So a consumer with work (pending or unacknowledged messages), no
pull waiting and no delivery or ack for longer than its ack wait has no live worker: every
replica was killed, is crash-looping, or hangs. In Kubernetes the kubelet restarts them;
this is what makes the gap visible (`hs_consumer_stalled`, alert `HeadshotsConsumerStalled`).

A live idle worker leaves a few milliseconds between one fetch and the next with nothing
waiting; the activity window covers that, and the alert asks for the state to persist.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.js import api

from services.common import metrics
from services.common.bus.client import Bus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerState:
    stream: str
    consumer: str
    work: int  # pending + acknowledgement pending
    waiting: int  # pull requests waiting
    idle_s: float | None  # since the last delivery, in-progress ack or ack (None: never)
    ack_wait_s: float

    @property
    def stalled(self) -> bool:
        if self.work == 0 or self.waiting > 0:
            return False
        return self.idle_s is None or self.idle_s > self.ack_wait_s


def consumer_state(info: api.ConsumerInfo, now: datetime | None = None) -> ConsumerState:
    now = now or datetime.now(UTC)
    seen = [
        t
        for t in (
            info.delivered.last_active if info.delivered else None,
            info.ack_floor.last_active if info.ack_floor else None,
        )
        if t is not None
    ]
    idle = (now - max(seen)).total_seconds() if seen else None
    ack_wait = float(info.config.ack_wait or 30.0)
    return ConsumerState(
        stream=info.stream_name,
        consumer=info.name,
        work=int(info.num_pending or 0) + int(info.num_ack_pending or 0),
        waiting=int(info.num_waiting or 0),
        idle_s=idle,
        ack_wait_s=ack_wait,
    )


class ConsumerWatch:
    """Exports `hs_consumer_stalled` / `hs_consumer_waiting_pulls` for every durable on
    `streams`, and logs each consumer that stalls or recovers (once per change)."""

    def __init__(self, bus: Bus, streams: tuple[str, ...]) -> None:
        self.bus = bus
        self.streams = streams
        self._stalled: set[tuple[str, str]] = set()

    async def check(self) -> list[ConsumerState]:
        states: list[ConsumerState] = []
        for stream in self.streams:
            try:
                infos = await self.bus.js.consumers_info(stream)
            except (nats.errors.Error, nats.js.errors.Error) as err:
                log.debug("consumers of %s unavailable: %r", stream, err)
                continue
            states.extend(consumer_state(i) for i in infos if i.config.durable_name)
        for s in states:
            key = (s.stream, s.consumer)
            metrics.CONSUMER_WAITING_PULLS.labels(*key).set(s.waiting)
            metrics.CONSUMER_STALLED.labels(*key).set(1 if s.stalled else 0)
            fields = {"stream": s.stream, "consumer": s.consumer, "work": s.work}
            if s.stalled and key not in self._stalled:
                self._stalled.add(key)
                idle = "never active" if s.idle_s is None else f"idle {s.idle_s:.0f}s"
                log.warning(
                    "consumer has work and no live worker (%s)", idle, extra={"fields": fields}
                )
            elif not s.stalled and key in self._stalled:
                self._stalled.discard(key)
                log.info("consumer has a live worker again", extra={"fields": fields})
        return states
