"""The e2e harness: an embedded stack tuned for 2 CPU cores, and ways to look inside it.

Everything here observes the stack from outside, the way an operator would: the public
gRPC API, the JetStream streams, the blob folder, the services' logs and span files.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import nats
from nats.aio.msg import Msg

from clients.sdk import ADMIN_TOKEN_ENV, state_name
from devstack.stack import Stack, tail
from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import jobs_pb2
from services.common.bus.client import Bus
from services.common.bus.deadletter import list_dead_letters
from services.common.storage.factory import open_blob_store

ROOT = Path(__file__).resolve().parents[2]
FACES = (ROOT / "tests" / "fixtures" / "faces").resolve()
MODELS_DIR = Path(os.environ.get("HS_MODELS_DIR", ROOT / "var" / "models")).resolve()
FAULTINJECT = Path(__file__).resolve().parent / "faultinject"
ADMIN_TOKEN = "e2e-admin-" + "0123456789abcdef" * 2

# Orders small enough for 2 cores, big enough that every stage has several steps to be
# interrupted in (the fault tests kill a service after its first progress report).
ORDER_FIELDS: dict[str, object] = {"candidate_count": 8, "result_count": 2}
FAULT_ORDER_FIELDS: dict[str, object] = {"candidate_count": 12, "result_count": 2}
ORDER_TIMEOUT_S = 240.0

# Service settings for speed (names from each service's settings.py). Short ack waits so a
# killed worker's job comes back within seconds; few deliveries so a poison job dead-letters
# quickly; small batches so work is spread over several progress reports.
FAST_ENV: dict[str, dict[str, str]] = {
    "trainer": {
        "HS_TRAINER_STEPS": "24",
        # Two likeness validations of two small renders each, instead of five of four.
        "HS_TRAINER_VALIDATION_EVERY": "12",
        "HS_TRAINER_VALIDATION_IMAGES": "2",
        "HS_TRAINER_VALIDATION_INFERENCE_STEPS": "6",
        # Training state saved every 8 steps, so a killed trainer resumes mid-run.
        "HS_TRAINER_CHECKPOINT_EVERY": "8",
        "HS_TRAINER_PROGRESS_INTERVAL_S": "1",
        "HS_TRAINER_ACK_WAIT_S": "10",
        "HS_TRAINER_MAX_DELIVER": "3",
    },
    "generator": {
        "HS_GENERATOR_BATCH_SIZE": "2",
        "HS_GENERATOR_STEPS": "8",
        "HS_GENERATOR_ACK_WAIT_S": "10",
        "HS_GENERATOR_MAX_DELIVER": "3",
    },
    "filter": {
        "HS_FILTER_SCORE_BATCH": "4",
        "HS_FILTER_ACK_WAIT_S": "10",
        "HS_FILTER_MAX_DELIVER": "3",
    },
    "gateway": {
        ADMIN_TOKEN_ENV: ADMIN_TOKEN,
        # A lost job is found within a minute and a half rather than ten.
        "HS_GATEWAY_STUCK_AFTER_S": "90",
        "HS_GATEWAY_RECONCILE_INTERVAL_S": "5",
        "HS_GATEWAY_WATCH_POLL_S": "0.5",
        # Twelve orders upload at once on 2 cores: the selfie checks queue on the filter.
        "HS_GATEWAY_FILTER_TIMEOUT_S": "240",
    },
}
STAGE_SUBJECTS = {
    "trainer": "events.training.progress",
    "generator": "events.generation.progress",
    "filter": "events.filtering.scored",
}


def make_stack(run_dir: Path, *, otel_file: Path | None = None, **overrides: str) -> Stack:
    """A stack with the fast settings, fault injection armed (inert until the crash file
    names an order) and, when `otel_file` is given, every process writing its spans there."""
    crash_file = run_dir / "crash-jobs.txt"
    extra = {
        "HS_MODELS_DIR": str(MODELS_DIR),
        "HS_SHUTDOWN_GRACE_SECONDS": "10",
        "HS_LOG_LEVEL": "INFO",
        "HS_E2E_CRASH_FILE": str(crash_file),
        # Platform limits reach every service alike. The fixture folder has six photos (two
        # of them the same portrait); the production minimum is eight.
        "HS_LIMIT_MIN_PHOTOS": "3",
        "HS_LIMIT_MAX_ROUNDS": "2",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(FAULTINJECT), str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
        **overrides,
    }
    if otel_file is not None:
        extra |= {"HS_OTEL_EXPORTER": "file", "HS_OTEL_FILE": str(otel_file)}
    service_env = {name: dict(env) for name, env in FAST_ENV.items()}
    return Stack(run_dir, extra_env=extra, service_env=service_env)


def ids(order_name: str) -> tuple[str, str]:
    """tenants/{t}/orders/{o} -> (t, o)."""
    parts = order_name.split("/")
    return parts[1], parts[3]


def arm_crash(stack: Stack, subject: str, order_name: str) -> None:
    """Make every handler of `subject` crash on this order's jobs (see faultinject/)."""
    with (stack.run_dir / "crash-jobs.txt").open("a") as f:
        f.write(f"{subject} {ids(order_name)[1]}\n")


def logs(stack: Stack, lines: int = 25) -> str:
    """The last lines of every service log, for assertion messages."""
    return "\n".join(
        f"--- {name} ({sp.log_path})\n{tail(sp.log_path, lines)}"
        for name, sp in stack.procs.items()
    )


def ran_to_the_end(order: pb.Order) -> bool:
    """Every stage ran and the filter judged every candidate: READY, or FAILED because no
    candidate passed (NOTHING_PASSED, with the counts). The tiny test model draws noise, not
    faces, so with it the honest end is the second; a real model's order ends READY."""
    return order.state == pb.ORDER_STATE_READY or (
        order.state == pb.ORDER_STATE_FAILED and order.failure_reason.startswith("NOTHING_PASSED")
    )


def describe(order: pb.Order) -> str:
    return (
        f"{order.name} is {state_name(order.state)}"
        + (f" ({order.failure_reason})" if order.failure_reason else "")
        + (f", progress {order.progress.detail}" if order.progress.detail else "")
    )


# ------------------------------------------------------------------------------ JetStream


@asynccontextmanager
async def bus_of(stack: Stack) -> AsyncIterator[Bus]:
    assert stack.nats is not None
    bus = await Bus.connect(stack.nats.url, "e2e-probe", publish_retry_s=5)
    try:
        yield bus
    finally:
        await bus.close()


def job_order_id(subject: str, payload: bytes) -> str:
    kind = subject.removeprefix("jobs.")
    msg_type = {"train": jobs_pb2.TrainJob, "generate": jobs_pb2.GenerateJob}.get(
        kind, jobs_pb2.FilterJob
    )
    msg = msg_type()
    msg.ParseFromString(payload)
    return str(msg.order_id)


async def dead_letters(stack: Stack, order_name: str) -> list[jobs_pb2.DeadLetter]:
    """The order's jobs in the DEADLETTER stream."""
    order_id = ids(order_name)[1]
    async with bus_of(stack) as bus:
        found = await list_dead_letters(bus)
    return [d for d in found if job_order_id(d.subject, d.payload) == order_id]


@asynccontextmanager
async def first_event(
    stack: Stack, subject: str, order_name: str, accept: Callable[[jobs_pb2.OrderEvent], bool]
) -> AsyncIterator[asyncio.Future[jobs_pb2.OrderEvent]]:
    """A future resolved by the first `subject` event of the order that `accept`s.

    A core NATS subscription sees JetStream publishes as they happen, without a consumer
    (so it takes nothing from the services)."""
    assert stack.nats is not None
    nc = await nats.connect(stack.nats.url, name="e2e-watch")
    found: asyncio.Future[jobs_pb2.OrderEvent] = asyncio.get_running_loop().create_future()
    order_id = ids(order_name)[1]

    async def on_msg(msg: Msg) -> None:
        event = jobs_pb2.OrderEvent()
        event.ParseFromString(msg.data)
        if event.order_id == order_id and accept(event) and not found.done():
            found.set_result(event)

    await nc.subscribe(subject, cb=on_msg)
    try:
        yield found
    finally:
        await nc.close()


# ------------------------------------------------------------------------------ blobs


async def candidate_blobs(stack: Stack, order_name: str) -> list[str]:
    """Result ids that have an image in the blob store (the file store lists without keys)."""
    tenant_id, order_id = ids(order_name)
    store = open_blob_store(f"file://{stack.run_dir / 'blobs'}")
    prefix = f"tenants/{tenant_id}/orders/{order_id}/candidates/"
    infos = await store.list(prefix)
    return sorted(i.key.removeprefix(prefix).rsplit(".", 1)[0] for i in infos)


# ------------------------------------------------------------------------------ spans


def read_spans(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
