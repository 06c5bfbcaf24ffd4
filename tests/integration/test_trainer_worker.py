"""The jobs.train worker as a real process (`python -m services.trainer`) on a real
nats-server and blob folder, tiny SD1.5-shaped model, real photos.

One order goes through every way a long job is interrupted:
1. SIGTERM mid-training: the process checkpoints, hands the job back (nak: nothing is left
   ack-pending) and exits inside its grace period;
2. the next process resumes from that checkpoint; kill -9 it after a later checkpoint;
3. the job is redelivered after AckWait, the third process resumes from the last
   checkpoint and finishes: one `completed` event, exactly one adapter, no checkpoint left,
   nothing pending on the consumer.
A second job whose photos are unusable fails the order with the reason.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from devstack.embedded import NatsServer, free_port
from headshots.v1 import headshots_pb2, jobs_pb2
from models.tiny_diffusion import build
from services.common.bus.client import Bus
from services.common.storage.base import blob_key
from services.common.storage.factory import open_blob_store
from tests.support.bus_helpers import REPO, wait_until

pytestmark = pytest.mark.integration

TENANT = "acme"
STEPS = 200
CHECKPOINT_EVERY = 20


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    server = NatsServer(tmp_path / "nats").start()
    yield server.url
    server.stop()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, "trainer-test", publish_retry_s=5)
    await b.ensure_streams()
    yield b
    await b.close()


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[float, str, jobs_pb2.OrderEvent]] = []

    async def start(self, bus: Bus) -> None:
        async def on_event(msg: Msg) -> None:
            self.items.append(
                (time.monotonic(), msg.subject, jobs_pb2.OrderEvent.FromString(msg.data))
            )

        await bus.nc.subscribe("events.training.>", cb=on_event)

    def of(self, order: str, subject: str, since: float = 0.0) -> list[jobs_pb2.OrderEvent]:
        return [e for t, s, e in self.items if s == subject and e.order_id == order and t >= since]

    def last_step(self, order: str, since: float = 0.0) -> int:
        steps = [e.done for e in self.of(order, "events.training.progress", since)]
        return max(steps, default=0)


def start_trainer(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.trainer"],
        cwd=REPO,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def _put_photos(blobs: object, order: str, paths: list[Path]) -> list[str]:
    keys = []
    for p in paths:
        key = blob_key(TENANT, order, "photos", p.name)
        await blobs.put(key, p.read_bytes())  # type: ignore[attr-defined]
        keys.append(key)
    return keys


def _env(nats_url: str, blob_dir: Path, models_dir: Path, base: Path) -> dict[str, str]:
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        HS_NATS_URL=nats_url,
        HS_BLOB_URL=f"file://{blob_dir}",
        HS_MODELS_DIR=str(models_dir),
        HS_GRPC_PORT=str(free_port()),
        HS_METRICS_PORT=str(free_port()),
        HS_LOG_FORMAT="text",
        HS_SHUTDOWN_GRACE_SECONDS="10",
        HS_TRAINER_BASE_MODEL=str(base),
        HS_TRAINER_DEVICE="cpu",
        HS_TRAINER_CPU_THREADS="1",
        HS_TRAINER_STEPS=str(STEPS),
        HS_TRAINER_CHECKPOINT_EVERY=str(CHECKPOINT_EVERY),
        HS_TRAINER_VALIDATION_EVERY="100",
        HS_TRAINER_VALIDATION_IMAGES="1",
        HS_TRAINER_VALIDATION_INFERENCE_STEPS="2",
        HS_TRAINER_PROGRESS_INTERVAL_S="0.2",
        HS_TRAINER_ACK_WAIT_S="9",
        HS_TRAINER_MIN_PHOTOS="2",
    )
    env.pop("HS_MASTER_KEY", None)
    return env


async def test_sigterm_and_kill_9_resume_from_checkpoints_and_write_one_adapter(
    bus: Bus, nats_url: str, models_dir: Path, faces_dir: Path, tmp_path: Path
) -> None:
    base = build("sd15", models_dir / "tiny-sd15")
    blob_dir = tmp_path / "blobs"
    blobs = open_blob_store(f"file://{blob_dir}")
    order = "order-t"
    photos = await _put_photos(blobs, order, sorted((faces_dir / "obama").glob("*.jpg"))[:4])
    job = jobs_pb2.TrainJob(
        job_id=f"{order}:train",
        tenant_id=TENANT,
        order_id=order,
        photo_keys=photos,
        subject_class=headshots_pb2.SUBJECT_CLASS_MAN,
    )
    events = Events()
    await events.start(bus)
    await bus.publish("jobs.train", job, msg_id=job.job_id)
    env = _env(nats_url, blob_dir, models_dir, base)
    log = tmp_path / "trainer.log"
    ckpt = blob_dir / blob_key(TENANT, order, "checkpoints", "train-state.pt")
    adapter_dir = blob_dir / "tenants" / TENANT / "orders" / order / "adapter"

    def tail() -> str:
        return "\n" + log.read_text(errors="replace")[-3000:]

    # 1. SIGTERM mid-training: checkpoint, nak, exit.
    proc = start_trainer(env, log)
    try:
        await wait_until(
            lambda: events.last_step(order) >= 30, within=120, what="training to start" + tail()
        )
        os.killpg(proc.pid, signal.SIGTERM)
        t0 = time.monotonic()
        rc = await asyncio.to_thread(proc.wait, 30)
        assert rc == 0 and time.monotonic() - t0 < 10, tail()
    finally:
        stop(proc)
    assert not events.of(order, "events.training.completed"), "finished before SIGTERM"
    from services.trainer.checkpointing import TrainingState

    term_step = TrainingState.from_bytes(ckpt.read_bytes()).step
    assert term_step >= 30
    # Handed back (nak): the job can be fetched again at once, well before AckWait would
    # have released it. Put it back for the next process.
    sub = await bus.js.pull_subscribe_bind("trainer", stream="JOBS")
    msgs = await sub.fetch(1, timeout=2.5)
    assert msgs and msgs[0].metadata.num_delivered == 2
    await msgs[0].nak()
    await sub.unsubscribe()

    # 2. Resume; kill -9 after a later checkpoint.
    restarted = time.monotonic()
    proc = start_trainer(env, log)
    try:
        await wait_until(
            lambda: events.last_step(order, restarted) >= term_step + 2 * CHECKPOINT_EVERY,
            within=120,
            what="the second run to train" + tail(),
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        stop(proc)
    first_after_term = min(e.done for e in events.of(order, "events.training.progress", restarted))
    assert first_after_term > term_step, "the second run started over instead of resuming"
    assert not events.of(order, "events.training.completed"), "killed too late"
    kill_step = TrainingState.from_bytes(ckpt.read_bytes()).step
    assert kill_step > term_step

    # 3. Redelivered after AckWait, resumed from the last checkpoint, finished once.
    restarted = time.monotonic()
    proc = start_trainer(env, log)
    try:
        await wait_until(
            lambda: bool(events.of(order, "events.training.completed")),
            within=150,
            what="the job to complete" + tail(),
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            stop(proc)
    later = events.of(order, "events.training.progress", restarted)
    assert min(e.done for e in later) > kill_step
    (done,) = events.of(order, "events.training.completed")
    assert f"resumed from step {kill_step}" in done.detail
    result = done.training
    assert result.adapter_key == blob_key(TENANT, order, "adapter", "lora.safetensors")
    assert result.steps == STEPS and result.rank == 16 and result.chosen_step in (100, 200)
    assert result.instance_prompt == "a photo of ohwx man" and result.final_loss > 0
    assert [p.name for p in adapter_dir.iterdir()] == ["lora.safetensors"]
    assert not ckpt.exists(), "the checkpoint outlived the job"
    info = await bus.js.consumer_info("JOBS", "trainer")
    assert info.num_pending == 0 and info.num_ack_pending == 0


async def test_unusable_photos_fail_the_order_with_the_reason(
    bus: Bus, nats_url: str, models_dir: Path, faces_dir: Path, tmp_path: Path
) -> None:
    base = build("sd15", models_dir / "tiny-sd15")
    blob_dir = tmp_path / "blobs"
    blobs = open_blob_store(f"file://{blob_dir}")
    order = "order-p"
    photos = await _put_photos(blobs, order, sorted((faces_dir / "partial").glob("*.jpg")))
    job = jobs_pb2.TrainJob(job_id=f"{order}:train", tenant_id=TENANT, order_id=order)
    job.photo_keys.extend(photos)
    events = Events()
    await events.start(bus)
    await bus.publish("jobs.train", job, msg_id=job.job_id)
    log = tmp_path / "trainer.log"
    proc = start_trainer(_env(nats_url, blob_dir, models_dir, base), log)
    try:
        await wait_until(
            lambda: bool(events.of(order, "events.training.failed")),
            within=90,
            what="the failure event\n" + log.read_text(errors="replace")[-2000:],
        )
    finally:
        stop(proc)
    seen = events.of(order, "events.training.failed")
    # The handler and the dead-letter callback both say it, under one event id (JetStream
    # keeps one; this core subscriber sees both publishes).
    assert {e.event_id for e in seen} == {f"{order}:training:failed"}
    failed = seen[0]
    assert "0 of 2 photos" in failed.failure_reason
    assert "cut off" in failed.failure_reason
    assert not (blob_dir / "tenants" / TENANT / "orders" / order / "adapter").exists()
