"""JetStream layer of the platform: streams, publishing with dedup ids and trace context,
and pull workers (see `bus_worker.py`) with a dead-letter path (see `deadletter.py`).

JetStream carries intent; PostgreSQL holds the truth (ARCHITECTURE.md §3). Everything here
is therefore at-least-once: publishes are retried under the same `Nats-Msg-Id` (the server
drops repeats inside the 2-minute dedup window) and handlers must be idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import nats
import nats.errors
import nats.js.errors
from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.aio.client import Server
from nats.js import JetStreamContext, api
from opentelemetry import propagate, trace

from services.common.bus.ids import (
    DEADLETTER_STREAM,
    EVENTS_STREAM,
    JOB_SUBJECTS,
    JOBS_STREAM,
)

__all__ = [
    "DEADLETTER_STREAM",
    "EVENTS_STREAM",
    "JOBS_STREAM",
    "JOB_SUBJECTS",
    "Bus",
]

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
# Messages carry references, never images (ARCHITECTURE.md §3).
MAX_MSG_BYTES = 1024 * 1024
DEDUP_WINDOW_S = 120.0
DAY_S = 24 * 3600.0

# Failures a publish is retried through: the server is restarting, JetStream is not ready
# yet after a restart (no responders / 503), or the reply was lost. The retry reuses the
# Nats-Msg-Id, so a publish that did land the first time is dropped as a duplicate.
_TRANSIENT = (
    nats.errors.TimeoutError,
    TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
)


def _backoff_handler(
    base: float, cap: float
) -> Callable[[list[Server], dict[str, Any]], tuple[Server | None, float]]:
    """nats-py reconnects with a fixed wait; this gives exponential backoff with jitter so a
    fleet of workers does not hammer a server that is coming back."""

    def choose(servers: list[Server], _info: dict[str, Any]) -> tuple[Server | None, float]:
        attempts = min((s.reconnects for s in servers), default=0)
        delay = min(cap, base * (2 ** min(attempts, 16)))
        return None, delay * random.uniform(0.5, 1.0)

    return choose


class Stoppable(Protocol):
    async def stop(self, drain: bool = True, grace: float | None = None) -> None: ...


class Bus:
    """One NATS connection plus its JetStream context. Create with `await Bus.connect(...)`."""

    def __init__(self, nc: NATS, *, publish_retry_s: float = 30.0) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=5.0)
        self.publish_retry_s = publish_retry_s
        self._workers: list[Stoppable] = []

    @classmethod
    async def connect(
        cls,
        url: str,
        name: str = "headshots",
        *,
        publish_retry_s: float = 30.0,
        reconnect_base_s: float = 0.1,
        reconnect_cap_s: float = 5.0,
    ) -> Bus:
        """Connect and keep reconnecting forever (a nats-server restart is survived).

        `publish_retry_s` bounds how long one `publish` keeps retrying while the server is away.
        """

        async def on_disconnect() -> None:
            log.warning("nats disconnected (%s); reconnecting", name)

        async def on_reconnect() -> None:
            log.warning("nats reconnected (%s) to %s", name, nc.connected_url)

        async def on_error(err: Exception) -> None:
            log.info("nats connection error (%s): %r", name, err)

        async def on_closed() -> None:
            log.info("nats connection closed (%s)", name)

        nc = await nats.connect(
            url,
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            reconnect_to_server_handler=_backoff_handler(reconnect_base_s, reconnect_cap_s),
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            error_cb=on_error,
            closed_cb=on_closed,
        )
        return cls(nc, publish_retry_s=publish_retry_s)

    async def close(self) -> None:
        for worker in list(self._workers):
            await worker.stop(drain=False)
        if not self.nc.is_closed:
            await self.nc.drain()

    # ---------------------------------------------------------------- streams

    async def ensure_streams(
        self,
        replicas: int = 1,
        events_max_age_s: float = 7 * DAY_S,
        deadletter_max_age_s: float = 30 * DAY_S,
    ) -> None:
        """Declare JOBS, EVENTS and DEADLETTER; update them in place if they exist."""
        common: dict[str, Any] = {
            "storage": api.StorageType.FILE,
            "num_replicas": replicas,
            "duplicate_window": DEDUP_WINDOW_S,
            "max_msg_size": MAX_MSG_BYTES,
        }
        await self._upsert_stream(
            api.StreamConfig(
                name=JOBS_STREAM,
                subjects=list(JOB_SUBJECTS),
                retention=api.RetentionPolicy.WORK_QUEUE,
                # A full work queue refuses new jobs instead of silently dropping old ones.
                discard=api.DiscardPolicy.NEW,
                **common,
            )
        )
        await self._upsert_stream(
            api.StreamConfig(
                name=EVENTS_STREAM,
                subjects=["events.>"],
                retention=api.RetentionPolicy.LIMITS,
                max_age=events_max_age_s,
                **common,
            )
        )
        await self._upsert_stream(
            api.StreamConfig(
                name=DEADLETTER_STREAM,
                subjects=["dead.>"],
                retention=api.RetentionPolicy.LIMITS,
                max_age=deadletter_max_age_s,
                **common,
            )
        )

    async def _upsert_stream(self, config: api.StreamConfig) -> None:
        assert config.name is not None
        try:
            await self.js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(config)
            log.info("created stream %s", config.name)
            return
        await self.js.update_stream(config)

    # ---------------------------------------------------------------- publish

    async def publish(
        self,
        subject: str,
        payload: bytes | Message,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
        *,
        ack_timeout: float = 2.0,
    ) -> api.PubAck:
        """Publish to JetStream with `Nats-Msg-Id = msg_id` and W3C trace context.

        If `headers` already carry a `traceparent` (e.g. an outbox row written inside a
        request), the publish span continues that trace; otherwise the current one.
        Each try waits `ack_timeout` for the PubAck; transient failures are retried for up to
        `publish_retry_s`; raises the last error after.
        """
        if not msg_id:
            raise ValueError("publish needs a non-empty msg_id (used for dedup)")
        data = payload.SerializeToString() if isinstance(payload, Message) else bytes(payload)
        if len(data) > MAX_MSG_BYTES:
            raise ValueError(
                f"message for {subject} is {len(data)} bytes; the limit is {MAX_MSG_BYTES} "
                "(send blob references, not content)"
            )
        hdrs: dict[str, str] = dict(headers or {})
        parent = propagate.extract(hdrs) if "traceparent" in hdrs else None
        with _tracer.start_as_current_span(
            f"publish {subject}",
            context=parent,
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": subject,
                "messaging.message.id": msg_id,
            },
        ):
            propagate.inject(hdrs)
            hdrs[MSG_ID_HEADER] = msg_id
            return await self._publish_retrying(subject, data, hdrs, ack_timeout)

    async def _publish_retrying(
        self, subject: str, data: bytes, headers: dict[str, str], ack_timeout: float
    ) -> api.PubAck:
        deadline = time.monotonic() + self.publish_retry_s
        delay = 0.05
        while True:
            try:
                # nats-py may add headers to the dict it is given; hand it a copy each try.
                return await self.js.publish(
                    subject, data, timeout=ack_timeout, headers=dict(headers)
                )
            except _TRANSIENT as err:
                if time.monotonic() + delay > deadline:
                    raise
                log.info("publish %s: %r; retrying in %.2fs", subject, err, delay)
            except nats.js.errors.APIError as err:
                # 503: JetStream still recovering after a restart / leader election.
                if err.code != 503 or time.monotonic() + delay > deadline:
                    raise
                log.info("publish %s: JetStream unavailable; retrying", subject)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # ---------------------------------------------------------------- consume

    def track(self, consumer: Stoppable) -> None:
        """A consumer on this connection, stopped by `close()` if still running."""
        self._workers.append(consumer)

    def untrack(self, consumer: Stoppable) -> None:
        if consumer in self._workers:
            self._workers.remove(consumer)

    async def stream_for(self, subject: str) -> str:
        return await self.js.find_stream_name_by_subject(subject)

    async def consumer_lag(self, stream: str, durable: str) -> int:
        """Messages the consumer still has to finish: not yet delivered + delivered, unacked."""
        info = await self.js.consumer_info(stream, durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
