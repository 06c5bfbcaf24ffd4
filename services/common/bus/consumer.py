"""Pull workers: a durable JetStream pull consumer driving an async handler.

Delivery is at-least-once. A late ack can arrive after a redelivery, so handlers must be
idempotent (deterministic output names, compare-and-set state changes).

Outcome of one delivery:
- handler returns             -> ack, confirmed by the server (`ack_sync`)
- a dependency is down (`services.common.outages.dependency_down`: PostgreSQL, NATS or the
  blob store unreachable) -> the worker keeps the message (in-progress acks continue) and
  runs the handler again after an exponential backoff with jitter, for up to
  `retry.budget_s` seconds; past that, dead letter with cause "dependency"
- `RetryableError(delay=s)`   -> nak with that delay
- `PermanentError`            -> dead letter with the reason, then term
- any other exception         -> nak with `backoff[deliveries-1]` (default: the retry
  policy's backoff)
- any failure on the last allowed delivery -> dead letter with the last error, then term
- worker stopped / handler cancelled -> nak without delay (another replica takes it)
While a handler runs, an in-progress ack goes out every `ack_wait / 3` seconds.

Why outage retries keep the message instead of nak'ing it: JetStream counts every
redelivery against MaxDeliver, which must stay small so a job that crashes its worker is
dead-lettered quickly; a 6 s database outage would burn it in a second. Holding the
delivery spends time, not deliveries, and a replica that dies while waiting still hands
the job back through AckWait as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import nats.errors
import nats.js.errors
from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from services.common import metrics
from services.common.bus.client import Bus
from services.common.bus.deadletter import (
    CAUSE_DEPENDENCY,
    CAUSE_EXHAUSTED,
    CAUSE_PERMANENT,
    DeadLetterCallback,
    DeadLetterMover,
    build_dead_letter,
    delete_original,
    publish_dead_letter,
    with_cause,
)
from services.common.outages import RetryPolicy, dependency_down, what_is_down

__all__ = [
    "DeadLetterCallback",
    "Handler",
    "JobContext",
    "PermanentError",
    "RetryPolicy",
    "RetryableError",
    "Worker",
]

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

M = TypeVar("M", bound=Message)


class RetryableError(Exception):
    """Try again later: the message is nak'ed and redelivered after `delay` seconds."""

    def __init__(self, msg: str, delay: float = 0.0) -> None:
        super().__init__(msg)
        self.delay = delay


class PermanentError(Exception):
    """Retrying cannot help (bad input, missing data): dead-letter the job at once."""


class JobContext:
    """What a handler sees of one delivery."""

    def __init__(self, msg: Msg, span: trace.Span, trace_context: otel_context.Context) -> None:
        self._msg = msg
        self.span = span
        self.trace_context = trace_context
        meta = msg.metadata
        self.subject: str = msg.subject
        self.data: bytes = msg.data
        self.headers: Mapping[str, str] = dict(msg.headers or {})
        self.num_delivered: int = meta.num_delivered
        self.stream_seq: int = meta.sequence.stream
        self.stream: str = meta.stream
        self.consumer: str = meta.consumer
        self.msg_id: str | None = self.headers.get("Nats-Msg-Id")
        # Tries of this delivery that met a dependency outage (the worker runs the handler
        # again after a backoff, without a redelivery).
        self.outage_retries: int = 0

    def parse(self, msg_type: type[M]) -> M:
        """Decode the payload; a payload that does not parse is a `PermanentError`."""
        out = msg_type()
        try:
            out.ParseFromString(self.data)
        except Exception as err:  # protobuf raises DecodeError, but be broad about garbage
            raise PermanentError(
                f"payload on {self.subject} is not a {msg_type.DESCRIPTOR.full_name}: {err}"
            ) from err
        return out

    async def in_progress(self) -> None:
        """Tell the server the job is still being worked on (resets AckWait)."""
        await self._msg.in_progress()


Handler = Callable[[JobContext], Awaitable[None]]


class Worker:
    """A durable pull consumer on `subject` of `bus`: `await run()` until `await stop()`."""

    def __init__(
        self,
        bus: Bus,
        subject: str,
        durable: str,
        handler: Handler,
        *,
        ack_wait: float = 30,
        max_deliver: int = 5,
        concurrency: int = 1,
        backoff: list[float] | None = None,
        stream: str | None = None,
        on_dead: DeadLetterCallback | None = None,
        shutdown_grace: float = 30.0,
        fetch_timeout: float = 2.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if ack_wait <= 0:
            raise ValueError("ack_wait must be > 0")
        if max_deliver < 1:
            raise ValueError("max_deliver must be >= 1")
        self.bus = bus
        self.subject = subject
        self.durable = durable
        self.handler = handler
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.concurrency = concurrency
        self.backoff = list(backoff or [])
        self.stream = stream
        self.on_dead = on_dead
        self.shutdown_grace = shutdown_grace
        self.fetch_timeout = fetch_timeout
        self.retry = retry or RetryPolicy.from_settings()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._inflight: dict[asyncio.Task[None], Msg] = {}
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._sub: JetStreamContext.PullSubscription | None = None
        self._mover: DeadLetterMover | None = None
        self._work_queue = True
        bus.track(self)

    # ------------------------------------------------------------------ setup

    async def ensure_consumer(self) -> str:
        """Create or update the durable consumer (idempotent). Returns the stream name."""
        stream = self.stream or await self.bus.stream_for(self.subject)
        self.stream = stream
        config = api.ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            filter_subject=self.subject,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        # Without an explicit action the server creates, or updates an existing durable.
        await self.bus.js.add_consumer(stream, config)
        info = await self.bus.js.stream_info(stream)
        self._work_queue = info.config.retention == api.RetentionPolicy.WORK_QUEUE
        return stream

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        stream = await self.ensure_consumer()
        self._sub = await self.bus.js.pull_subscribe_bind(self.durable, stream=stream)
        self._mover = DeadLetterMover(
            self.bus, stream, self.durable, self.on_dead, delete_original=self._work_queue
        )
        await self._mover.start()
        # The lag KEDA scales on, exported in the same units for operators' dashboards.
        lag = asyncio.create_task(self._report_lag(stream))
        log.info("worker %s on %s (%s) started", self.durable, self.subject, stream)
        try:
            while not self._stopping.is_set():
                free = self.concurrency - len(self._inflight)
                if free <= 0:
                    self._slot_free.clear()
                    await self._wait_any(self._slot_free.wait())
                    continue
                msgs = await self._fetch(free)
                for msg in msgs:
                    if self._stopping.is_set():
                        # Fetched after stop: hand it straight back.
                        await _quietly(msg.nak())
                        continue
                    task = asyncio.create_task(self._process(msg))
                    self._inflight[task] = msg
                    task.add_done_callback(self._done)
        finally:
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag
            await self._finish_inflight()
            if self._mover is not None:
                await self._mover.stop()
            if self._sub is not None:
                await _quietly(self._sub.unsubscribe())
            self.bus.untrack(self)
            self._stopped.set()
            log.info("worker %s stopped", self.durable)

    async def _report_lag(self, stream: str, interval_s: float = 5.0) -> None:
        gauge = metrics.QUEUE_LAG.labels(stream, self.durable)
        while not self._stopping.is_set():
            try:
                gauge.set(await self.bus.consumer_lag(stream, self.durable))
            except Exception as err:  # NATS restarting: the next pass reports it
                log.debug("lag of %s/%s unavailable: %r", stream, self.durable, err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval_s)

    async def _wait_any(self, coro: Awaitable[object]) -> None:
        waiter = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
        for f in (waiter, stop):
            f.cancel()

    async def _fetch(self, batch: int) -> list[Msg]:
        assert self._sub is not None
        try:
            # The fetch is never cancelled on stop: a pull request cancelled client-side
            # still delivers to our inbox, and those messages would wait out AckWait.
            return await self._sub.fetch(batch, timeout=self.fetch_timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return []  # nothing to do (or the reply was lost in a reconnect)
        except nats.errors.ConnectionClosedError:
            self._stopping.set()
            return []
        except (nats.errors.Error, nats.js.errors.APIError) as err:
            # e.g. consumer gone while the server restarts; keep trying.
            log.warning("worker %s fetch failed: %r", self.durable, err)
            await asyncio.sleep(min(self.fetch_timeout, 1.0))
            return []

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._slot_free.set()

    async def stop(self, drain: bool = True, grace: float | None = None) -> None:
        """Stop fetching; let in-flight handlers finish for `grace` seconds if `drain`
        (default: the worker's `shutdown_grace`), then cancel them and nak their messages."""
        if grace is not None:
            self.shutdown_grace = grace
        if not drain:
            self.shutdown_grace = 0.0
        self._stopping.set()
        if self._sub is None:  # never ran
            self._stopped.set()
        await self._stopped.wait()

    async def _finish_inflight(self) -> None:
        if not self._inflight:
            return
        tasks = set(self._inflight)
        _done, pending = await asyncio.wait(tasks, timeout=self.shutdown_grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("worker %s: %d handler(s) cancelled at stop", self.durable, len(pending))
            await asyncio.wait(pending)

    # ------------------------------------------------------------------ one message

    async def _process(self, msg: Msg) -> None:
        headers = dict(msg.headers or {})
        parent = propagate.extract(headers)
        with _tracer.start_as_current_span(
            f"process {msg.subject}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": msg.subject,
                "messaging.consumer.group.name": self.durable,
                "messaging.message.id": headers.get("Nats-Msg-Id", ""),
            },
        ) as span:
            ctx = JobContext(msg, span, parent)
            span.set_attribute("messaging.nats.delivery_count", ctx.num_delivered)
            keepalive = asyncio.create_task(self._keep_alive(msg))
            in_flight = metrics.JOBS_IN_FLIGHT.labels(self.durable, self.subject)
            in_flight.inc()
            t0 = time.perf_counter()
            outcome = "error"
            try:
                outcome = await self._run_handler(ctx, msg, span)
            finally:
                in_flight.dec()
                metrics.JOB_SECONDS.labels(self.durable, self.subject).observe(
                    time.perf_counter() - t0
                )
                metrics.JOBS.labels(self.durable, self.subject, outcome).inc()
                keepalive.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keepalive

    async def _run_handler(self, ctx: JobContext, msg: Msg, span: trace.Span) -> str:
        last = ctx.num_delivered >= self.max_deliver
        down_since = 0.0
        while True:
            try:
                await self.handler(ctx)
            except asyncio.CancelledError:
                # Stopped mid-job: give it back at once so another replica picks it up.
                span.set_status(trace.Status(trace.StatusCode.ERROR, "cancelled at shutdown"))
                await _quietly(msg.nak())
                return "cancelled"
            except PermanentError as err:
                span.record_exception(err)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(err)))
                await self._dead_letter(ctx, msg, with_cause(CAUSE_PERMANENT, str(err)))
                return "dead_letter"
            except Exception as err:
                span.record_exception(err)
                if not dependency_down(err):
                    return await self._failed(ctx, msg, span, err, last)
                if not ctx.outage_retries:
                    down_since = time.monotonic()
                outcome = await self._wait_out_outage(ctx, msg, err, down_since)
                if outcome is not None:
                    return outcome
                continue
            await self._ack(msg, ctx)
            return "ok"

    async def _failed(
        self, ctx: JobContext, msg: Msg, span: trace.Span, err: Exception, last: bool
    ) -> str:
        if last:
            span.set_status(trace.Status(trace.StatusCode.ERROR, repr(err)))
            await self._dead_letter(ctx, msg, self._exhausted(ctx, err))
            return "dead_letter"
        if isinstance(err, RetryableError):
            await _quietly(msg.nak(delay=err.delay or None))
            return "retry"
        span.set_status(trace.Status(trace.StatusCode.ERROR, repr(err)))
        log.warning(
            "%s seq %d delivery %d failed: %r",
            ctx.subject,
            ctx.stream_seq,
            ctx.num_delivered,
            err,
        )
        await _quietly(msg.nak(delay=self._backoff_for(ctx.num_delivered)))
        return "retry"

    async def _wait_out_outage(
        self, ctx: JobContext, msg: Msg, err: BaseException, down_since: float
    ) -> str | None:
        """Back off before the next try; an outcome when there is none (budget spent or
        the worker stopping), None to try again."""
        ctx.outage_retries += 1
        down_s = time.monotonic() - down_since
        what = what_is_down(err)
        if down_s >= self.retry.budget_s:
            reason = with_cause(
                CAUSE_DEPENDENCY,
                f"{what} unavailable for {down_s:.0f}s ({ctx.outage_retries} tries,"
                f" budget {self.retry.budget_s:g}s); last: {err!r}",
            )
            await self._dead_letter(ctx, msg, reason)
            return "dead_letter"
        delay = min(self.retry.delay(ctx.outage_retries), self.retry.budget_s - down_s)
        log.warning(
            "%s seq %d: %s unavailable; trying again in %.1fs (try %d, down %.0fs of %gs): %r",
            ctx.subject,
            ctx.stream_seq,
            what,
            delay,
            ctx.outage_retries,
            down_s,
            self.retry.budget_s,
            err,
        )
        metrics.JOB_RETRIES.labels(self.durable, self.subject, "dependency").inc()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        if self._stopping.is_set():
            await _quietly(msg.nak())  # another replica (or this one, restarted) takes it
            return "cancelled"
        return None

    def _exhausted(self, ctx: JobContext, err: BaseException) -> str:
        return with_cause(
            CAUSE_EXHAUSTED,
            f"failed {ctx.num_delivered} deliveries (max {self.max_deliver}); last: {err!r}",
        )

    def _backoff_for(self, delivered: int) -> float | None:
        if not self.backoff:
            return self.retry.delay(delivered)
        return self.backoff[min(delivered - 1, len(self.backoff) - 1)] or None

    async def _keep_alive(self, msg: Msg) -> None:
        interval = self.ack_wait / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await msg.in_progress()
            except (nats.errors.Error, OSError) as err:
                # Disconnected: keep trying; the job is redelivered if we stay away too long.
                log.info("in-progress ack for seq %s failed: %r", msg.metadata.sequence, err)

    async def _ack(self, msg: Msg, ctx: JobContext) -> None:
        for attempt in range(3):
            try:
                await msg.ack_sync(timeout=2.0)
                return
            except nats.errors.MsgAlreadyAckdError:
                return
            except (TimeoutError, nats.errors.Error) as err:
                log.warning(
                    "ack of %s seq %d not confirmed (try %d): %r",
                    ctx.subject,
                    ctx.stream_seq,
                    attempt + 1,
                    err,
                )
                await asyncio.sleep(0.2 * (attempt + 1))
        # The job may be redelivered; handlers are idempotent, so that is safe.

    async def _dead_letter(self, ctx: JobContext, msg: Msg, reason: str) -> None:
        dead = build_dead_letter(
            stream=ctx.stream,
            consumer=ctx.consumer,
            stream_seq=ctx.stream_seq,
            subject=ctx.subject,
            payload=ctx.data,
            deliveries=ctx.num_delivered,
            reason=reason,
        )
        try:
            await publish_dead_letter(self.bus, dead, ctx.headers)
        except Exception:
            # Could not record it: leave the job to be redelivered rather than lose it.
            log.exception("could not dead-letter %s seq %d", ctx.subject, ctx.stream_seq)
            await _quietly(msg.nak(delay=self.ack_wait))
            return
        await _quietly(msg.term())
        if self._work_queue:
            # Whether term removes the message from a work-queue stream depends on the
            # server version; deleting by sequence makes sure (already gone is fine).
            await delete_original(self.bus, ctx.stream, ctx.stream_seq)
        metrics.DEAD_LETTERS.labels(ctx.subject).inc()
        log.warning("dead-lettered %s seq %d: %s", ctx.subject, ctx.stream_seq, reason)
        if self.on_dead is not None:
            try:
                await self.on_dead(dead)
            except Exception:
                log.exception("on_dead callback failed for %s seq %d", ctx.subject, ctx.stream_seq)


async def _quietly(aw: Awaitable[object]) -> None:
    """Acks are best effort once the connection is gone: the server redelivers anyway."""
    try:
        await aw
    except (nats.errors.Error, nats.js.errors.Error, OSError) as err:
        log.info("ack/nak not sent: %r", err)
