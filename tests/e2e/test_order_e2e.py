"""A full order, every service its own process: upload checks, every stage run to its end
with every candidate scored (READY, or NOTHING_PASSED with the tiny model's faceless images),
rejections explained, results downloadable, and a deletion schedule."""

from __future__ import annotations

import asyncio
import io
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from PIL import Image

from clients.sdk import state_name
from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import internal_pb2, internal_pb2_grpc
from tests.e2e.conftest import CompletedOrder, Gateway
from tests.e2e.harness import (
    ORDER_FIELDS,
    candidate_blobs,
    dead_letters,
    describe,
    ids,
    logs,
    ran_to_the_end,
)

pytestmark = pytest.mark.e2e

STAGES = ["QUEUED", "TRAINING", "GENERATING", "FILTERING"]


def test_order_runs_every_stage_to_its_end(
    completed_order: CompletedOrder, shared_gateway: Gateway
) -> None:
    order = completed_order.run.order
    assert ran_to_the_end(order), describe(order) + "\n" + logs(shared_gateway.stack)
    end = state_name(order.state)
    if order.state == pb.ORDER_STATE_READY:
        assert not order.failure_reason
        assert order.progress.fraction == pytest.approx(1.0)
    else:
        # Nothing passed: the reason says so with the counts, never a silent READY with nothing.
        assert "candidate(s) generated" in order.failure_reason, order.failure_reason
    # The watcher saw the stages in lifecycle order (a top-up round may revisit some).
    seen = completed_order.run.clock.sequence
    firsts = [seen.index(s) for s in [*STAGES, end] if s in seen]
    assert firsts == sorted(firsts), seen
    assert {"TRAINING", "GENERATING", end} <= set(seen), seen


def test_upload_checks_every_photo(completed_order: CompletedOrder) -> None:
    upload = completed_order.run.upload
    stored = upload.stored.photos
    # Every photo got an answer: stored with its checks, or refused with the reason.
    assert sorted([p.filename for p in stored] + [r.filename for r in upload.refused]) == sorted(
        p.name for p in completed_order.photos
    )
    for photo in stored:
        assert photo.name.startswith(completed_order.run.order.name + "/photos/")
        assert photo.usable and photo.width > 0 and photo.height > 0 and len(photo.sha256) == 64
        assert not any(f.blocking for f in photo.findings), photo
    for refused in upload.refused:
        assert refused.filename in refused.reason and refused.code, refused
    # The two bioguide portraits are the same picture under two names: one is flagged.
    flagged = [p.filename for p in stored if any(f.code == "DUPLICATE" for f in p.findings)]
    flagged += [r.filename for r in upload.refused if r.code == "DUPLICATE"]
    assert any("bioguide" in f for f in flagged), (
        [(p.filename, [f.code for f in p.findings]) for p in stored],
        upload.refused,
    )
    assert upload.stored.set_check.usable_count == len(stored)
    assert not upload.stored.set_check.different_person


async def test_results_scores_and_reasons(completed_order: CompletedOrder) -> None:
    order = completed_order.run.order
    client = completed_order.client
    results, summary = await client.list_results(order.name, include_rejected=True)
    names = [r.name for r in results]
    assert len(names) == len(set(names)), "a result is listed twice"
    assert summary.candidates == len(results) >= ORDER_FIELDS["candidate_count"]

    # Every candidate is in the blob store exactly once, and nothing else is.
    assert await candidate_blobs(completed_order.stack, order.name) == sorted(
        n.rsplit("/", 1)[-1] for n in names
    )
    delivered = sorted((r for r in results if r.delivered), key=lambda r: r.rank)
    rejected = [r for r in results if r.rejection_reasons]
    assert [r.rank for r in delivered] == list(range(1, len(delivered) + 1))
    assert len(delivered) == order.delivered_count == summary.delivered
    assert summary.delivered <= summary.passed
    assert len(delivered) <= ORDER_FIELDS["result_count"]
    assert len(rejected) == summary.candidates - summary.passed
    for r in results:
        assert r.style_id and r.model_id and r.width > 0 and r.height > 0, r
        assert 0.0 <= r.scores.quality <= 1.0 and 0.0 <= r.scores.likeness <= 1.0, r
        if r.delivered:
            assert not r.rejection_reasons, r
        assert all(code.strip() for code in r.rejection_reasons), r
    # The summary's reason counts cover every rejected candidate.
    counted = {}
    for r in rejected:
        for code in r.rejection_reasons:
            counted[code] = counted.get(code, 0) + 1
    assert dict(summary.by_reason) == counted
    # Seeds make every image reproducible: no two candidates share (style, seed).
    assert len({(r.style_id, r.seed) for r in results}) == len(results)

    # Without include_rejected only the delivered ones are listed.
    only, _ = await client.list_results(order.name, include_rejected=False)
    assert sorted(r.name for r in only) == sorted(r.name for r in delivered)


async def test_results_download_as_images(completed_order: CompletedOrder) -> None:
    client = completed_order.client
    results, _ = await client.list_results(completed_order.run.order.name, include_rejected=True)
    picked = sorted(results, key=lambda r: (not r.delivered, r.name))[:2]
    for r in picked:
        data = await client.download(r.name)
        assert len(data) == r.size_bytes
        img = Image.open(io.BytesIO(data))
        assert img.size == (r.width, r.height)
        assert Image.MIME[img.format] == r.content_type


async def test_deletion_schedule(completed_order: CompletedOrder, shared_gateway: Gateway) -> None:
    order = completed_order.run.order
    now = datetime.now(UTC)
    ret = order.retention
    photos_at = ret.photos_delete_time.ToDatetime(UTC)
    # Default: training photos go 7 days after delivery (at most 30).
    assert now + timedelta(days=6) < photos_at <= now + timedelta(days=30, minutes=5), ret
    assert ret.results_delete_time.seconds > 0, ret
    # Retention scheduled it too (it learns of the ended order from a lifecycle event).
    tenant_id, order_id = ids(order.name)
    addr = shared_gateway.stack.procs["retention"].addr
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = internal_pb2_grpc.RetentionServiceStub(ch)
        deadline = time.monotonic() + 30
        while True:
            status = await stub.Status(
                internal_pb2.StatusRequest(tenant_id=tenant_id, order_id=order_id), timeout=10
            )
            if status.scheduled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    classes = {s.data_class for s in status.scheduled}
    assert "PHOTOS" in classes, status
    assert not any(s.done for s in status.scheduled), "nothing is due yet"


async def test_no_dead_letters(completed_order: CompletedOrder) -> None:
    assert await dead_letters(completed_order.stack, completed_order.run.order.name) == []


async def test_other_tenants_cannot_see_the_order(
    completed_order: CompletedOrder, shared_gateway: Gateway
) -> None:
    _, stranger = await shared_gateway.tenant("stranger")
    name = completed_order.run.order.name
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stranger.get_order(name)
    assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
    assert state_name(completed_order.run.order.state) not in (err.value.details() or "")
