"""The jobs.filter worker on real NATS, PostgreSQL and ONNX models, with fixture "renders".

- a round scored in two batches: per-batch SCORED events with every score and reason, then
  one COMPLETED selection of passing candidates only, with the rejection summary;
- a batch delivered twice scores nothing twice and decides the round once;
- too few passing in a non-final round asks for more (NEEDS_MORE with the counts);
- a batch whose handler always fails is dead-lettered and fails its order with the reason.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from nats.aio.msg import Msg
from PIL import Image, ImageFilter

from devstack.embedded import NatsServer, Postgres
from headshots.v1 import jobs_pb2
from services.common.bus.client import Bus
from services.common.bus.consumer import Worker
from services.common.bus.deadletter import list_dead_letters
from services.common.bus.outbox import OutboxRelay
from services.common.db import engine as db
from services.common.storage.base import BlobStore, blob_key
from services.common.storage.factory import open_blob_store
from services.filter.analysis import SelfieAnalyzer
from services.filter.scoring import CandidateScorer
from services.filter.selection import select_results
from services.filter.tables import candidates, outbox
from services.filter.worker import FilterWorker
from tests.conftest import FIXTURES, MODELS_DIR
from tests.support.bus_helpers import running, wait_until

pytestmark = pytest.mark.integration

TENANT = "acme"
STYLES = ["navy-blazer-soft-studio-grey", "charcoal-suit-rembrandt-dark"]


@lru_cache(maxsize=1)
def analyzer() -> SelfieAnalyzer:
    from models.face_stack.build import build

    build(MODELS_DIR / "face", fixtures=FIXTURES)
    return SelfieAnalyzer.load(MODELS_DIR / "face", intra_op_threads=2)


def render(relative: str, blur: float = 0.0) -> bytes:
    img = Image.open(FIXTURES / relative).convert("RGB")
    # Padded to a square (never cropped: a crop could cut the face).
    side = max(img.size)
    square = Image.new("RGB", (side, side), (128, 128, 128))
    square.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    img = square.resize((512, 512))
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def noise() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (512, 512, 3), np.uint8)).save(
        out, "PNG"
    )
    return out.getvalue()


# Six "renders": three of the person, a stranger, a blurred one and one without a face.
RENDERS = [
    ("obama/obama-briefing-room.jpg", 0.0),
    ("obama/obama-2012-portrait.jpg", 0.0),
    ("obama/obama-president-bioguide.jpg", 0.0),
    ("biden/biden-vp-portrait.jpg", 0.0),
    ("obama/obama-2009-congress.jpg", 7.0),
    (None, 0.0),
]


@pytest.fixture(scope="module")
def reference() -> list[float]:
    names = ["obama/obama-2010-blue-room.jpg", "obama/obama-senate-bioguide.jpg"]
    names += ["obama/obama-2009-congress.jpg"]
    response = analyzer().analyze([(n, (FIXTURES / n).read_bytes()) for n in names])
    return list(response.set.reference_embedding)


class Env:
    def __init__(self, engine: object, blobs: BlobStore, bus: Bus) -> None:
        self.engine = engine
        self.blobs = blobs
        self.bus = bus
        self.events: list[tuple[str, jobs_pb2.OrderEvent]] = []

    def of(self, order: str, subject: str) -> list[jobs_pb2.OrderEvent]:
        return [e for s, e in self.events if s == subject and e.order_id == order]


@pytest.fixture
async def env(postgres: Postgres, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Env]:
    await db.migrate(postgres.url, "filter")
    engine = db.create_engine(postgres.url)
    bus = await Bus.connect(nats_server.url, "filter-test", publish_retry_s=5)
    await bus.ensure_streams()
    e = Env(engine, open_blob_store(f"file://{tmp_path / 'blobs'}"), bus)

    async def on_event(msg: Msg) -> None:
        e.events.append((msg.subject, jobs_pb2.OrderEvent.FromString(msg.data)))

    await bus.nc.subscribe("events.filtering.>", cb=on_event)
    relay = OutboxRelay(engine, outbox, bus, poll_interval=0.05)
    relay_task = asyncio.create_task(relay.run())
    yield e
    await relay.stop()
    await relay_task
    await bus.close()
    await engine.dispose()


async def put_round(env: Env, order: str, round: int = 0) -> list[jobs_pb2.Candidate]:
    out = []
    for i, (name, blur) in enumerate(RENDERS):
        key = blob_key(TENANT, order, "candidates", f"r{round}-{i:05d}.png")
        await env.blobs.put(key, render(name, blur) if name else noise(), "image/png")
        out.append(
            jobs_pb2.Candidate(
                result_id=f"r{round}-{i:05d}",
                blob_key=key,
                style_id=STYLES[i % 2],
                seed=1000 + i,
                index=i,
            )
        )
    return out


def job(order: str, cands: list, batch: int, reference: list[float], **kw) -> jobs_pb2.FilterJob:
    return jobs_pb2.FilterJob(
        job_id=f"{order}:filter:r0:b{batch}",
        tenant_id=TENANT,
        order_id=order,
        round=0,
        batch=batch,
        candidates=cands,
        round_total=len(RENDERS),
        reference_embedding=reference,
        **kw,
    )


def make_worker(env: Env, scorer: object | None = None) -> FilterWorker:
    a = analyzer()
    return FilterWorker(
        env.engine,  # type: ignore[arg-type]
        env.blobs,
        env.bus,
        scorer or CandidateScorer(a.stack, a.identity),
        select_results,
        batch=2,
    )


async def test_a_round_is_scored_in_batches_then_selected_once(
    env: Env, reference: list[float]
) -> None:
    order = "o-" + uuid.uuid4().hex[:8]
    cands = await put_round(env, order)
    w = make_worker(env)
    async with running(Worker(env.bus, "jobs.filter", "filter", w.handle, ack_wait=30)):
        first = job(order, cands[:3], 0, reference, result_count=2)
        await env.bus.publish("jobs.filter", first, msg_id=first.job_id)
        await wait_until(
            lambda: len(env.of(order, "events.filtering.scored")) == 1, 60, "first batch"
        )
        # The same batch again (a redelivery after a lost ack looks like this).
        await env.bus.publish("jobs.filter", first, msg_id=first.job_id + ":again")
        second = job(order, cands[3:], 1, reference, result_count=2)
        await env.bus.publish("jobs.filter", second, msg_id=second.job_id)
        await wait_until(
            lambda: env.of(order, "events.filtering.completed"), 60, "the round's selection"
        )
        await asyncio.sleep(1.0)  # anything published twice would have arrived by now

    scored = env.of(order, "events.filtering.scored")
    # Three SCORED messages (the repeat of batch 0 republishes the same event id; the
    # stream deduplicates, a plain subscriber like this one may see it), same content.
    assert {e.event_id for e in scored} == {
        f"{order}:filtering:scored:r0:b0",
        f"{order}:filtering:scored:r0:b1",
    }
    by_result = {s.candidate.result_id: s for e in scored for s in e.scored.scored}
    assert sorted(by_result) == [c.result_id for c in cands]
    reasons = {rid: list(s.rejection_reasons) for rid, s in by_result.items()}
    assert reasons["r0-00000"] == reasons["r0-00001"] == reasons["r0-00002"] == []
    assert reasons["r0-00003"] == ["LOW_LIKENESS"]
    assert reasons["r0-00004"][0] == "BLURRED"  # blur also costs likeness
    assert reasons["r0-00005"] == ["NO_FACE"]
    assert by_result["r0-00000"].scores.likeness > 0.9
    assert by_result["r0-00003"].scores.likeness < 0.1

    (completed,) = env.of(order, "events.filtering.completed")
    assert completed.kind == jobs_pb2.EVENT_KIND_COMPLETED
    ranked = list(completed.selection.result_ids)
    assert len(ranked) == 2 and set(ranked) <= {"r0-00000", "r0-00001", "r0-00002"}
    summary = completed.selection.summary
    assert (summary.candidates, summary.passed, summary.delivered) == (6, 3, 2)
    assert summary.by_reason["BLURRED"] == summary.by_reason["NO_FACE"] == 1
    assert summary.by_reason["LOW_LIKENESS"] in (1, 2)

    async with env.engine.connect() as conn:  # type: ignore[attr-defined]
        n = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(candidates)
                .where(candidates.c.order_id == order)
            )
        ).scalar_one()
    assert n == 6  # one row per candidate, the repeated batch added none


async def test_too_few_passing_asks_for_more(env: Env, reference: list[float]) -> None:
    order = "o-" + uuid.uuid4().hex[:8]
    cands = await put_round(env, order)
    w = make_worker(env)
    async with running(Worker(env.bus, "jobs.filter", "filter", w.handle, ack_wait=30)):
        j = job(order, cands, 0, reference, result_count=5)
        await env.bus.publish("jobs.filter", j, msg_id=j.job_id)
        await wait_until(lambda: env.of(order, "events.filtering.needs_more"), 60, "needs_more")
    (more,) = env.of(order, "events.filtering.needs_more")
    assert (more.needs_more.passed, more.needs_more.wanted, more.needs_more.round) == (3, 5, 0)
    assert not env.of(order, "events.filtering.completed")


async def test_a_final_round_delivers_what_passed(env: Env, reference: list[float]) -> None:
    order = "o-" + uuid.uuid4().hex[:8]
    cands = await put_round(env, order)
    w = make_worker(env)
    async with running(Worker(env.bus, "jobs.filter", "filter", w.handle, ack_wait=30)):
        j = job(order, cands, 0, reference, result_count=5, final_round=True)
        await env.bus.publish("jobs.filter", j, msg_id=j.job_id)
        await wait_until(lambda: env.of(order, "events.filtering.completed"), 60, "completed")
    (done,) = env.of(order, "events.filtering.completed")
    assert len(done.selection.result_ids) == 3
    assert done.selection.summary.passed == 3


class Exploding:
    def score(self, images: object, reference: object) -> list:
        raise RuntimeError("onnx session lost")


async def test_a_batch_that_always_fails_fails_its_order(env: Env, reference: list[float]) -> None:
    order = "o-" + uuid.uuid4().hex[:8]
    cands = await put_round(env, order)
    w = make_worker(env, Exploding())

    async def on_dead(dead: jobs_pb2.DeadLetter) -> None:
        await w.on_dead(dead)

    consumer = Worker(
        env.bus, "jobs.filter", "filter", w.handle, ack_wait=5, max_deliver=2, on_dead=on_dead
    )
    async with running(consumer):
        j = job(order, cands[:2], 0, reference, result_count=2)
        await env.bus.publish("jobs.filter", j, msg_id=j.job_id)
        await wait_until(lambda: env.of(order, "events.filtering.failed"), 60, "failed event")
    (failed,) = env.of(order, "events.filtering.failed")
    assert failed.kind == jobs_pb2.EVENT_KIND_FAILED
    assert "onnx session lost" in failed.failure_reason
    dead = [d for d in await list_dead_letters(env.bus) if order.encode() in d.payload]
    assert len(dead) == 1
