"""The jobs.generate worker on a real nats-server and a real blob folder.

- three orders with three adapters on one warm pipeline: one base load;
- filter jobs go out while the round is still sampling (pipelining);
- a refused custom prompt fails the order with the reason;
- kill -9 mid-order, restart: every image stored and handed to the filter exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from devstack.embedded import NatsServer, free_port
from headshots.v1 import jobs_pb2
from services.common.bus.client import Bus
from services.common.bus.deadletter import list_dead_letters
from services.common.storage.base import BlobStore, blob_key
from services.common.storage.factory import open_blob_store
from services.generator.output import DIGITAL_SOURCE_TYPE, digital_source_type
from services.generator.pipeline import WarmPipeline, adapter_bytes
from services.generator.settings import GeneratorSettings
from services.generator.worker import GeneratorWorker
from services.policy.styles import load_catalogue
from tests.support.bus_helpers import REPO, running, wait_until
from tests.support.generator_models import make_adapter, tiny_sd15

pytestmark = pytest.mark.integration

TENANT = "acme"
STYLES = ["navy-blazer-soft-studio-grey", "charcoal-suit-rembrandt-dark"]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sd15(tmp_path_factory.mktemp("models") / "tiny-sd15")


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    server = NatsServer(tmp_path / "nats").start()
    yield server.url
    server.stop()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, "generator-test", publish_retry_s=5)
    await b.ensure_streams()
    yield b
    await b.close()


class Seen:
    """Everything the generator publishes, as the filter and the gateway would see it."""

    def __init__(self) -> None:
        self.filter_jobs: list[jobs_pb2.FilterJob] = []
        self.events: list[tuple[str, jobs_pb2.OrderEvent]] = []

    async def start(self, bus: Bus) -> None:
        async def on_filter(msg: Msg) -> None:
            self.filter_jobs.append(jobs_pb2.FilterJob.FromString(msg.data))

        async def on_event(msg: Msg) -> None:
            self.events.append((msg.subject, jobs_pb2.OrderEvent.FromString(msg.data)))

        await bus.nc.subscribe("jobs.filter", cb=on_filter)
        await bus.nc.subscribe("events.generation.>", cb=on_event)

    def of(self, order: str) -> list[jobs_pb2.FilterJob]:
        return [j for j in self.filter_jobs if j.order_id == order]

    def event(self, order: str, subject: str) -> jobs_pb2.OrderEvent | None:
        return next((e for s, e in self.events if s == subject and e.order_id == order), None)


async def put_adapter(blobs: BlobStore, order: str, seed: int, unet: object) -> str:
    key = blob_key(TENANT, order, "adapter", "lora.safetensors")
    await blobs.put(key, adapter_bytes(make_adapter(unet, seed)))  # type: ignore[arg-type]
    return key


def generate_job(order: str, adapter_key: str, count: int, **kw: object) -> jobs_pb2.GenerateJob:
    return jobs_pb2.GenerateJob(
        job_id=f"{order}:generate:r0",
        tenant_id=TENANT,
        order_id=order,
        adapter_key=adapter_key,
        instance_prompt="photo of hsk person",
        style_ids=STYLES,
        count=count,
        round=0,
        seed_base=1234,
        result_count=2,
        **kw,  # type: ignore[arg-type]
    )


async def test_three_orders_one_base_load_and_filter_jobs_while_sampling(
    bus: Bus, base_model: Path, tmp_path: Path
) -> None:
    settings = GeneratorSettings(base_model=base_model, steps=6, batch_size=2, device="cpu")
    loads_before = WarmPipeline.base_loads
    pipeline = WarmPipeline.load(settings)
    blobs = open_blob_store(f"file://{tmp_path / 'blobs'}")
    seen = Seen()
    await seen.start(bus)
    # When the last batch of an order has rendered, how many of its filter jobs were out?
    out_before_last: list[int] = []

    async def after_batch(number: int) -> None:
        if number == 2:
            await asyncio.sleep(0.05)  # let already-sent messages arrive
            out_before_last.append(len(seen.filter_jobs))

    gen = GeneratorWorker(settings, pipeline, blobs, bus, load_catalogue(), after_batch=after_batch)
    orders = ["order-a", "order-b", "order-c"]
    keys = [await put_adapter(blobs, o, 10 + i, pipeline.pipe.unet) for i, o in enumerate(orders)]
    async with running(gen.worker()):  # type: ignore[arg-type]
        for order, key in zip(orders, keys, strict=True):
            job = generate_job(order, key, count=6)
            await bus.publish("jobs.generate", job, msg_id=job.job_id)
        await wait_until(
            lambda: all(seen.event(o, "events.generation.completed") for o in orders),
            within=60,
            what="three completed rounds",
        )
    assert WarmPipeline.base_loads == loads_before + 1
    # Pipelining: for each order, batch 0's filter job was out before batch 2 had rendered.
    assert len(out_before_last) == 3
    assert all(n >= 1 + 3 * i for i, n in enumerate(out_before_last)), out_before_last

    for order in orders:
        jobs = seen.of(order)
        assert sorted(j.job_id for j in jobs) == [f"{order}:filter:r0:b{b}" for b in range(3)]
        cands = [c for j in jobs for c in j.candidates]
        assert sorted(c.result_id for c in cands) == [f"r0-{i:05d}" for i in range(6)]
        assert {c.style_id for c in cands} == set(STYLES)
        assert all(j.round_total == 6 and j.result_count == 2 for j in jobs)
        for c in cands:
            assert c.seed == 1234 + c.index and c.model_id == pipeline.model_id
            data = await blobs.get(c.blob_key)
            assert len(data) == c.size_bytes
            assert digital_source_type(data) == DIGITAL_SOURCE_TYPE
        progress = [e for s, e in seen.events if s.endswith("progress") and e.order_id == order]
        assert sorted(e.done for e in progress) == [2, 4, 6]
        assert all(e.total == 6 for e in progress)
    # Different adapters, same seeds and styles: different images.
    a = await blobs.get(blob_key(TENANT, "order-a", "candidates", "r0-00000.png"))
    b = await blobs.get(blob_key(TENANT, "order-b", "candidates", "r0-00000.png"))
    assert a != b


async def test_refused_prompt_fails_the_order_with_the_reason(
    bus: Bus, base_model: Path, tmp_path: Path
) -> None:
    settings = GeneratorSettings(base_model=base_model, steps=2, batch_size=2, device="cpu")
    pipeline = WarmPipeline.load(settings)
    blobs = open_blob_store(f"file://{tmp_path / 'blobs'}")
    seen = Seen()
    await seen.start(bus)
    gen = GeneratorWorker(settings, pipeline, blobs, bus, load_catalogue())
    async with running(gen.worker()):  # type: ignore[arg-type]
        job = generate_job("order-x", "tenants/acme/orders/order-x/adapter/x", 4)
        job.custom_prompt = "wearing an Adidas track jacket"
        await bus.publish("jobs.generate", job, msg_id=job.job_id)
        await wait_until(lambda: seen.event("order-x", "events.generation.failed"), within=20)
    failed = seen.event("order-x", "events.generation.failed")
    assert failed is not None and "brand" in failed.failure_reason
    assert "adidas" in failed.failure_reason
    assert not seen.of("order-x")
    dead = await list_dead_letters(bus, "generate")
    assert any("adidas" in d.reason for d in dead)


async def drain_filter_jobs(bus: Bus) -> list[jobs_pb2.FilterJob]:
    sub = await bus.js.pull_subscribe("jobs.filter", durable="filter")
    out: list[jobs_pb2.FilterJob] = []
    while True:
        try:
            msgs = await sub.fetch(50, timeout=1.0)
        except TimeoutError:
            return out
        for msg in msgs:
            out.append(jobs_pb2.FilterJob.FromString(msg.data))
            await msg.ack()


def start_generator(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.generator"],
        cwd=REPO,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def test_kill_9_mid_order_gives_every_image_exactly_once(
    bus: Bus, nats_url: str, base_model: Path, tmp_path: Path
) -> None:
    blob_dir = tmp_path / "blobs"
    blobs = open_blob_store(f"file://{blob_dir}")
    unet_host = WarmPipeline.load(GeneratorSettings(base_model=base_model, device="cpu"))
    key = await put_adapter(blobs, "order-k", 5, unet_host.pipe.unet)
    count = 16
    job = generate_job("order-k", key, count)
    await bus.publish("jobs.generate", job, msg_id=job.job_id)
    seen = Seen()
    await seen.start(bus)
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        HS_NATS_URL=nats_url,
        HS_BLOB_URL=f"file://{blob_dir}",
        HS_GRPC_PORT=str(free_port()),
        HS_METRICS_PORT=str(free_port()),
        HS_LOG_FORMAT="text",
        HS_SHUTDOWN_GRACE_SECONDS="3",
        HS_GENERATOR_BASE_MODEL=str(base_model),
        HS_GENERATOR_DEVICE="cpu",
        HS_GENERATOR_STEPS="25",
        HS_GENERATOR_BATCH_SIZE="2",
        HS_GENERATOR_ACK_WAIT_S="3",
    )
    env.pop("HS_MASTER_KEY", None)
    log = tmp_path / "generator.log"
    proc = start_generator(env, log)
    try:
        await wait_until(lambda: len(seen.of("order-k")) >= 2, within=90, what="two batches")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert seen.event("order-k", "events.generation.completed") is None, "killed too late"
        stored_at_kill = len(list((blob_dir).rglob("r0-*.png")))
        proc = start_generator(env, log)
        await wait_until(
            lambda: seen.event("order-k", "events.generation.completed") is not None,
            within=120,
            what="the round to complete after restart\n" + log.read_text()[-3000:],
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    assert 2 <= stored_at_kill < count
    # Every image stored once, under its deterministic name.
    names = sorted(p.name for p in blob_dir.rglob("r0-*.png"))
    assert names == [f"r0-{i:05d}.png" for i in range(count)]
    # Re-published batches went out again (a core subscriber sees every publish) ...
    assert len(seen.of("order-k")) > count // 2
    # ... but JetStream dropped the repeats by Nats-Msg-Id: the filter's consumer receives
    # every candidate exactly once.
    ids = [c.result_id for j in await drain_filter_jobs(bus) for c in j.candidates]
    assert sorted(ids) == [f"r0-{i:05d}" for i in range(count)]
    pending = await bus.js.consumer_info("JOBS", "generator")
    assert pending.num_pending == 0 and pending.num_ack_pending == 0
