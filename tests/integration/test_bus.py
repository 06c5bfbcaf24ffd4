"""JetStream layer against a real nats-server: dedup, redelivery, in-progress acks,
dead letters, retries, trace context, and a server restart."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devstack.embedded import NatsServer
from headshots.v1 import jobs_pb2
from services.common.bus.client import Bus
from services.common.bus.consumer import JobContext, PermanentError, RetryableError, Worker
from services.common.bus.deadletter import DeadLetterMover, list_dead_letters
from services.common.bus.ids import JOBS_STREAM
from tests.support.bus_helpers import kill_hard, running, spawn_python, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def fresh_nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """Own server per test: tests restart it, and a work-queue stream allows only one
    consumer per subject."""
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop(kill=True)


@pytest.fixture
async def bus(fresh_nats: NatsServer) -> AsyncIterator[Bus]:
    b = await Bus.connect(fresh_nats.url, name="test")
    await b.ensure_streams()
    yield b
    await b.close()


def train_job(order: str) -> jobs_pb2.TrainJob:
    return jobs_pb2.TrainJob(job_id=f"{order}:train", tenant_id="t1", order_id=order)


async def jobs_left(bus: Bus) -> int:
    return int((await bus.js.stream_info(JOBS_STREAM)).state.messages)


class Recorder:
    """A handler that records each delivery and then does what the test says."""

    def __init__(self, behaviour=None) -> None:
        self.seen: list[tuple[int, str, float]] = []
        self.behaviour = behaviour

    async def __call__(self, ctx: JobContext) -> None:
        job = ctx.parse(jobs_pb2.TrainJob)
        self.seen.append((ctx.num_delivered, job.order_id, time.monotonic()))
        if self.behaviour is not None:
            await self.behaviour(ctx)


async def test_ensure_streams_is_idempotent_and_lag_counts_waiting_jobs(bus: Bus) -> None:
    await bus.ensure_streams()  # second declaration updates in place, no error
    info = await bus.js.stream_info(JOBS_STREAM)
    assert info.config.retention == "workqueue"
    assert info.config.discard == "new"
    assert info.config.duplicate_window == 120
    await Worker(bus, "jobs.train", "trainer", Recorder()).ensure_consumer()
    for i in range(3):
        await bus.publish("jobs.train", train_job(f"o{i}"), msg_id=f"o{i}:train")
    assert await bus.consumer_lag(JOBS_STREAM, "trainer") == 3


async def test_same_msg_id_is_delivered_once(bus: Bus) -> None:
    first = await bus.publish("jobs.train", train_job("o1"), msg_id="o1:train")
    again = await bus.publish("jobs.train", train_job("o1"), msg_id="o1:train")
    assert not first.duplicate and again.duplicate
    handler = Recorder()
    async with running(Worker(bus, "jobs.train", "trainer", handler, ack_wait=1)):
        await wait_until(lambda: len(handler.seen) == 1, what="first delivery")
        await asyncio.sleep(1.5)  # longer than AckWait: nothing else may arrive
    assert [(n, o) for n, o, _ in handler.seen] == [(1, "o1")]
    assert await jobs_left(bus) == 0


DOOMED_WORKER = """
import asyncio, sys
from pathlib import Path
from services.common.bus.client import Bus
from services.common.bus.consumer import Worker

async def main(url, marker):
    bus = await Bus.connect(url, name="doomed")
    async def handler(ctx):
        Path(marker).write_text(str(ctx.num_delivered))
        await asyncio.sleep(3600)  # killed in here
    await Worker(bus, "jobs.train", "trainer", handler, ack_wait=1.0).run()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_job_of_killed_worker_is_redelivered_after_ack_wait(
    bus: Bus, fresh_nats: NatsServer, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    await bus.publish("jobs.train", train_job("o1"), msg_id="o1:train")
    child = spawn_python(DOOMED_WORKER, fresh_nats.url, str(marker))
    try:
        await wait_until(marker.exists, within=30, what="child handler to start")
    finally:
        kill_hard(child)
    handler = Recorder()
    async with running(Worker(bus, "jobs.train", "trainer", handler, ack_wait=1.0)):
        await wait_until(lambda: len(handler.seen) == 1, within=10, what="redelivery")
    assert handler.seen[0][:2] == (2, "o1")  # second delivery: the dead child had the first
    assert await jobs_left(bus) == 0


async def test_long_handler_with_in_progress_acks_is_not_redelivered(bus: Bus) -> None:
    async def slow(_ctx: JobContext) -> None:
        await asyncio.sleep(3.5)  # 3.5 x AckWait

    handler = Recorder(slow)
    await bus.publish("jobs.train", train_job("o1"), msg_id="o1:train")
    worker = Worker(bus, "jobs.train", "trainer", handler, ack_wait=1.0, concurrency=2)
    async with running(worker):
        await wait_until(lambda: len(handler.seen) >= 1, what="delivery")
        await asyncio.sleep(4.5)
    assert [n for n, _, _ in handler.seen] == [1]
    assert await jobs_left(bus) == 0


async def test_failing_job_is_dead_lettered_after_max_deliver(bus: Bus) -> None:
    async def broken(_ctx: JobContext) -> None:
        raise RuntimeError("model exploded")

    failed: list[jobs_pb2.DeadLetter] = []

    async def on_dead(dead: jobs_pb2.DeadLetter) -> None:
        failed.append(dead)

    handler = Recorder(broken)
    job = train_job("o1")
    await bus.publish("jobs.train", job, msg_id="o1:train")
    worker = Worker(
        bus, "jobs.train", "trainer", handler, ack_wait=1, max_deliver=3, on_dead=on_dead
    )
    async with running(worker):
        await wait_until(lambda: len(failed) == 1, what="dead letter")
    assert [n for n, _, _ in handler.seen] == [1, 2, 3]
    [dead] = await list_dead_letters(bus, kind="train")
    assert dead.payload == job.SerializeToString()
    assert dead.subject == "jobs.train" and dead.deliveries == 3
    assert "model exploded" in dead.reason
    assert failed[0] == dead
    assert await jobs_left(bus) == 0
    assert await bus.consumer_lag(JOBS_STREAM, "trainer") == 0


async def test_permanent_error_is_dead_lettered_at_once(bus: Bus) -> None:
    async def bad_input(_ctx: JobContext) -> None:
        raise PermanentError("no usable photos")

    handler = Recorder(bad_input)
    await bus.publish("jobs.train", train_job("o1"), msg_id="o1:train")
    async with running(Worker(bus, "jobs.train", "trainer", handler, ack_wait=1, max_deliver=5)):
        await wait_until(lambda: len(handler.seen) == 1, what="delivery")
        for _ in range(100):
            if await list_dead_letters(bus):
                break
            await asyncio.sleep(0.05)
    [dead] = await list_dead_letters(bus, kind="train")
    assert dead.deliveries == 1 and "no usable photos" in dead.reason
    assert len(handler.seen) == 1
    assert await jobs_left(bus) == 0


async def test_garbage_payload_is_dead_lettered_with_a_clear_reason(bus: Bus) -> None:
    handler = Recorder()
    await bus.publish("jobs.train", b"\xff\xff not protobuf", msg_id="junk")
    async with running(Worker(bus, "jobs.train", "trainer", handler, ack_wait=1)):
        for _ in range(100):
            if await list_dead_letters(bus):
                break
            await asyncio.sleep(0.05)
    [dead] = await list_dead_letters(bus)
    assert "headshots.v1.TrainJob" in dead.reason
    assert await jobs_left(bus) == 0


async def test_unacked_job_is_moved_by_the_advisory_mover(bus: Bus) -> None:
    """A consumer that takes the job and never answers (a hung process): the server gives
    up after MaxDeliver and only says so in an advisory; the mover acts on it."""
    moved: list[jobs_pb2.DeadLetter] = []

    async def on_dead(dead: jobs_pb2.DeadLetter) -> None:
        moved.append(dead)

    worker = Worker(bus, "jobs.train", "trainer", Recorder(), ack_wait=0.5, max_deliver=2)
    await worker.ensure_consumer()
    mover = DeadLetterMover(bus, JOBS_STREAM, "trainer", on_dead)
    await mover.start()
    job = train_job("o1")
    await bus.publish("jobs.train", job, msg_id="o1:train")
    sub = await bus.js.pull_subscribe_bind("trainer", stream=JOBS_STREAM)
    try:
        for delivery in (1, 2):
            [msg] = await sub.fetch(1, timeout=5)  # taken, never acked
            assert msg.metadata.num_delivered == delivery
        # The server notices the exhausted message only while someone is pulling (a real
        # worker always is), so keep a pull request open until the advisory has acted.
        deadline = time.monotonic() + 10
        while not moved and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                assert await sub.fetch(1, timeout=0.5) == []
        assert len(moved) == 1, "advisory mover did not move the job"
    finally:
        await mover.stop()
        await sub.unsubscribe()
    [dead] = await list_dead_letters(bus, kind="train")
    assert dead.payload == job.SerializeToString() and dead.deliveries == 2
    assert "no ack after 2 deliveries" in dead.reason
    assert await jobs_left(bus) == 0


async def test_retryable_error_naks_with_delay_and_succeeds_on_second_try(bus: Bus) -> None:
    async def flaky(ctx: JobContext) -> None:
        if ctx.num_delivered == 1:
            raise RetryableError("GPU busy", delay=0.8)

    handler = Recorder(flaky)
    await bus.publish("jobs.train", train_job("o1"), msg_id="o1:train")
    async with running(Worker(bus, "jobs.train", "trainer", handler, ack_wait=5)):
        await wait_until(lambda: len(handler.seen) == 2, what="second delivery")
        await asyncio.sleep(0.3)
        assert await jobs_left(bus) == 0
    (n1, _, t1), (n2, _, t2) = handler.seen
    assert (n1, n2) == (1, 2)
    assert t2 - t1 >= 0.7  # the nak delay was honoured, not AckWait (5 s) nor at once
    assert await list_dead_letters(bus) == []


async def test_stop_hands_in_flight_job_back_at_once(bus: Bus) -> None:
    started = asyncio.Event()

    async def stuck(_ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(3600)

    await bus.publish("jobs.train", train_job("o1"), msg_id="o1:train")
    first = Worker(bus, "jobs.train", "trainer", Recorder(stuck), ack_wait=30)
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(started.wait(), 10)
    await first.stop(drain=True, grace=0.2)  # handler does not finish: cancelled and nak'ed
    await task
    handler = Recorder()
    async with running(Worker(bus, "jobs.train", "trainer", handler, ack_wait=30)):
        # well inside AckWait (30 s): the nak gave it back
        await wait_until(lambda: len(handler.seen) == 1, within=5, what="hand-back")
    assert handler.seen[0][0] == 2


async def test_one_trace_id_from_producer_to_consumer(bus: Bus) -> None:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = trace.get_tracer("test")

    consumer_trace: list[int] = []

    async def handler(ctx: JobContext) -> None:
        consumer_trace.append(trace.get_current_span().get_span_context().trace_id)

    with tracer.start_as_current_span("create order") as root:
        await bus.publish("jobs.train", train_job("o1"), msg_id="o1:train")
    async with running(Worker(bus, "jobs.train", "trainer", handler, ack_wait=2)):
        await wait_until(lambda: len(consumer_trace) == 1, what="delivery")
        await asyncio.sleep(0.1)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    producer = spans["publish jobs.train"]
    consumer = spans["process jobs.train"]
    trace_id = root.get_span_context().trace_id
    assert producer.context.trace_id == trace_id
    assert consumer.context.trace_id == trace_id == consumer_trace[0]
    assert consumer.kind == trace.SpanKind.CONSUMER
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id


async def test_survives_nats_server_restart(bus: Bus, fresh_nats: NatsServer) -> None:
    handler = Recorder()
    await bus.publish("jobs.train", train_job("before"), msg_id="before:train")
    await asyncio.to_thread(fresh_nats.restart)
    # Published while the client is still reconnecting: retried, not lost.
    await bus.publish("jobs.train", train_job("after"), msg_id="after:train")
    async with running(Worker(bus, "jobs.train", "trainer", handler, ack_wait=2)):
        await wait_until(lambda: len(handler.seen) == 2, within=15, what="both jobs")
        # and a worker that is running through a restart keeps consuming
        await asyncio.to_thread(fresh_nats.restart)
        await bus.publish("jobs.train", train_job("during"), msg_id="during:train")
        await wait_until(lambda: len(handler.seen) == 3, within=20, what="job after restart")
    assert sorted(o for _, o, _ in handler.seen) == ["after", "before", "during"]
    assert await jobs_left(bus) == 0
