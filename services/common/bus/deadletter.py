"""Dead letters: JetStream has no dead-letter queue, so we build one.

A job ends up in the `DEADLETTER` stream (subject `dead.<original subject>`, e.g.
`dead.jobs.train`) as a `headshots.v1.DeadLetter` in two ways:

1. The worker itself, when a handler raises `PermanentError`, or raises anything on the
   last allowed delivery: it knows the payload and the real reason, so it writes the dead
   letter, then `term`s the message.
2. `DeadLetterMover`, for deliveries that never came back (the process died or hung on the
   last delivery): the server publishes the core-NATS advisory
   `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<durable>`; the mover fetches the
   message by stream sequence, writes the dead letter and deletes the original (a
   work-queue stream would otherwise keep a never-acked message forever).

Every dead letter is published with `Nats-Msg-Id = dead:{stream}:{seq}`, so several movers
(one per worker replica) and the worker path never write it twice inside the dedup window.
Only the party whose delete of the original succeeds calls `on_dead`, so the order is failed
once in the normal case; `on_dead` must still be idempotent (a crash between delete and
callback leaves it to the reconciler, which re-queues or fails orders whose job vanished).

Every reason starts with its cause (`<cause>: ...`, see `CAUSES`), so an operator can count
dead letters by cause (`python -m services.common.bus.deadletters list`) and the order
that a dead letter belongs to can be found from its payload (`order_of`).

Advisories are not stored: if no mover for that durable is connected at the moment the
limit is hit (every replica down at once), the advisory is lost and the message stays in
JOBS, counted neither as pending nor as ack-pending. Every worker runs a mover for its own
durable, so this needs all replicas down at the same instant; the reconciler covers the rest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.subscription import Subscription
from nats.js import api

from headshots.v1 import jobs_pb2
from services.common.bus.ids import DEADLETTER_STREAM

if TYPE_CHECKING:
    from services.common.bus.client import Bus

log = logging.getLogger(__name__)

MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"

DeadLetterCallback = Callable[[jobs_pb2.DeadLetter], Awaitable[None]]

# Why a job was dead-lettered: the first word of every reason.
CAUSE_PERMANENT = "permanent"  # the handler said retrying cannot help
CAUSE_EXHAUSTED = "retries"  # failed on every one of its deliveries
CAUSE_CRASHED = "crashed"  # never acknowledged: the worker died or hung on each delivery
CAUSE_DEPENDENCY = "dependency"  # a dependency stayed down past the retry budget
CAUSES = (CAUSE_PERMANENT, CAUSE_EXHAUSTED, CAUSE_CRASHED, CAUSE_DEPENDENCY)


def with_cause(cause: str, text: str) -> str:
    return f"{cause}: {text}"


def cause_of(reason: str) -> str:
    head, sep, _ = reason.partition(":")
    return head if sep and head in CAUSES else "unknown"


# Payload types by subject, to find the order a dead letter belongs to.
_PAYLOADS: dict[str, type[Message]] = {
    "jobs.train": jobs_pb2.TrainJob,
    "jobs.generate": jobs_pb2.GenerateJob,
    "jobs.filter": jobs_pb2.FilterJob,
}


def order_of(dead: jobs_pb2.DeadLetter) -> tuple[str, str] | None:
    """(tenant id, order id) of a dead job or event; None when the payload does not say."""
    cls = _PAYLOADS.get(dead.subject)
    if cls is None and dead.subject.startswith("events."):
        cls = jobs_pb2.OrderEvent
    if cls is None:
        return None
    msg = cls()
    try:
        msg.ParseFromString(dead.payload)
    except Exception:
        return None
    order_id = str(getattr(msg, "order_id", ""))
    return (str(getattr(msg, "tenant_id", "")), order_id) if order_id else None


# Headers that belong to the original publish, not to the dead letter.
_DROP_HEADERS = ("Nats-Msg-Id", "Nats-Expected-Stream", "Nats-TTL")


def dead_letter_subject(subject: str) -> str:
    """`jobs.train` -> `dead.jobs.train`."""
    return f"dead.{subject}"


def dead_letter_msg_id(stream: str, seq: int) -> str:
    return f"dead:{stream}:{seq}"


def build_dead_letter(
    *,
    stream: str,
    consumer: str,
    stream_seq: int,
    subject: str,
    payload: bytes,
    deliveries: int,
    reason: str,
) -> jobs_pb2.DeadLetter:
    now = Timestamp()
    now.FromDatetime(datetime.now(UTC))
    return jobs_pb2.DeadLetter(
        stream=stream,
        consumer=consumer,
        stream_seq=stream_seq,
        subject=subject,
        payload=payload,
        deliveries=deliveries,
        reason=reason,
        time=now,
    )


async def publish_dead_letter(
    bus: Bus, dead: jobs_pb2.DeadLetter, headers: Mapping[str, str] | None = None
) -> api.PubAck:
    """Write `dead` to DEADLETTER; original headers (trace context) travel along."""
    kept = {k: v for k, v in (headers or {}).items() if k not in _DROP_HEADERS}
    return await bus.publish(
        dead_letter_subject(dead.subject),
        dead,
        msg_id=dead_letter_msg_id(dead.stream, dead.stream_seq),
        headers=kept,
    )


async def delete_original(bus: Bus, stream: str, seq: int) -> bool:
    """Delete a message by sequence; False if it is already gone (someone else moved it)."""
    try:
        return bool(await bus.js.delete_msg(stream, seq))
    except nats.js.errors.NotFoundError:
        return False
    except nats.js.errors.APIError as err:
        # 10057: "no message found" comes back as a 400/404 depending on server version.
        if err.err_code in (10057, 10037) or err.code in (400, 404):
            return False
        raise


class DeadLetterMover:
    """Moves messages that hit MaxDeliver on `stream`/`durable` into DEADLETTER."""

    def __init__(
        self,
        bus: Bus,
        stream: str,
        durable: str,
        on_dead: DeadLetterCallback | None = None,
        *,
        delete_original: bool = True,
    ) -> None:
        self.bus = bus
        self.stream = stream
        self.durable = durable
        self.on_dead = on_dead
        # Only work-queue streams need the original removed; a limits stream (EVENTS) keeps
        # history for other consumers.
        self.delete_original = delete_original
        self._sub: Subscription | None = None

    async def start(self) -> None:
        subject = MAX_DELIVERIES_ADVISORY.format(stream=self.stream, durable=self.durable)
        # Core NATS subscription: nats-py re-subscribes it after a reconnect.
        self._sub = await self.bus.nc.subscribe(subject, cb=self._on_advisory)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
                pass
            self._sub = None

    async def _on_advisory(self, msg: nats.aio.msg.Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            seq = int(advisory["stream_seq"])
            deliveries = int(advisory.get("deliveries", 0))
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable max-deliveries advisory: %r", msg.data[:200])
            return
        try:
            await self.move(seq, deliveries)
        except Exception:
            # A callback error must not kill the subscription; the message stays in the
            # stream for the reconciler.
            log.exception("dead-letter move of %s seq %d failed", self.stream, seq)

    async def move(self, seq: int, deliveries: int) -> jobs_pb2.DeadLetter | None:
        """Move stream message `seq`; None if it is already gone."""
        try:
            original = await self.bus.js.get_msg(self.stream, seq)
        except nats.js.errors.NotFoundError:
            log.info("dead-letter: %s seq %d already gone", self.stream, seq)
            return None
        dead = build_dead_letter(
            stream=self.stream,
            consumer=self.durable,
            stream_seq=seq,
            subject=original.subject or "",
            payload=original.data or b"",
            deliveries=deliveries,
            reason=with_cause(
                CAUSE_CRASHED, f"no ack after {deliveries} deliveries (handler crashed or hung)"
            ),
        )
        await publish_dead_letter(self.bus, dead, original.headers)
        won = await delete_original(self.bus, self.stream, seq) if self.delete_original else True
        log.warning("dead-lettered %s seq %d (%s): %s", self.stream, seq, dead.subject, dead.reason)
        if won and self.on_dead is not None:
            await self.on_dead(dead)
        return dead


async def list_dead_letters(bus: Bus, kind: str | None = None) -> list[jobs_pb2.DeadLetter]:
    """All dead letters (optionally of one job kind, e.g. "train"), oldest first."""
    return [dead async for _, dead in iter_dead_letters(bus, kind)]


async def iter_dead_letters(
    bus: Bus, kind: str | None = None, subject: str | None = None
) -> AsyncIterator[tuple[int, jobs_pb2.DeadLetter]]:
    """(DEADLETTER sequence, dead letter), oldest first; `kind` is a job kind ("train"),
    `subject` a DEADLETTER subject filter (e.g. "dead.events.>")."""
    subject = subject or (f"dead.jobs.{kind}" if kind else "dead.>")
    seq = 1
    while True:
        try:
            raw = await bus.js.get_msg(DEADLETTER_STREAM, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return
        dead = jobs_pb2.DeadLetter()
        dead.ParseFromString(raw.data or b"")
        assert raw.seq is not None
        yield raw.seq, dead
        seq = raw.seq + 1


async def remove_dead_letter(bus: Bus, seq: int) -> bool:
    """Delete one dead letter by its DEADLETTER sequence; False when already gone."""
    return await delete_original(bus, DEADLETTER_STREAM, seq)
