"""Uploads judged incrementally, through the real face stack (issue 17): each photo is
analysed once, as it arrives; the set's verdict comes from the stored facts of earlier
photos; one photo per call or all in one call gives the same verdicts; and each photo is
in the blob store before the next one is read, with nothing left behind by a call that is
refused or cut off (real PostgreSQL, nats-server, gateway, the filter's servicer with the
real SelfieAnalyzer, fixture photos)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from headshots.v1 import headshots_pb2 as pb
from services.common.grpc.errors import status_of
from services.faces.identity import IdentityModel
from services.filter.analysis import SelfieAnalyzer
from tests.integration.test_gateway_api import chunks, md, new_order, stored_blobs, upload
from tests.support.face_stack import built_models, face_stack
from tests.support.gateway_harness import GatewayUnderTest, start_gateway

pytestmark = pytest.mark.integration
FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"
# Six photos of one man (two of them the same portrait, stored twice by its source), then
# two of another man: a near-copy and two strangers to tell apart.
SET = sorted((FACES / "obama").glob("*.jpg")) + sorted((FACES / "biden").glob("*.jpg"))[:2]


class CountingAnalyzer(SelfieAnalyzer):
    """The real analyzer; counts the photos whose pixels it analyses."""

    analysed: list[str]

    def analyze_photos(self, items):  # type: ignore[no-untyped-def]
        self.analysed.extend(pid for pid, _ in items)
        return super().analyze_photos(items)


@pytest.fixture(scope="module")
async def gw(postgres, nats_server, tmp_path_factory) -> AsyncIterator[GatewayUnderTest]:
    analyzer = CountingAnalyzer(
        face_stack(), IdentityModel.load(built_models(), intra_op_threads=2)
    )
    analyzer.analysed = []
    g = await start_gateway(
        postgres.url, nats_server.url, tmp_path_factory.mktemp("gwinc"), analyzer=analyzer
    )
    yield g
    await g.stop()


def files() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in SET]


async def first_photo_then_wait(
    gw: GatewayUnderTest, order: pb.Order, first, second, seen: list[str]
) -> AsyncIterator[pb.UploadPhotosRequest]:
    """Send the first photo and the second photo's first chunk (which makes the gateway take
    the first one in), then hold the stream until a blob is in the store; `seen` gets it."""
    async for msg in chunks(order.name, [first]):
        yield msg
    yield pb.UploadPhotosRequest(filename=second[0], data=second[1][:1000])
    for _ in range(600):
        seen[:] = await stored_blobs(gw, order)
        if seen:
            break
        await asyncio.sleep(0.1)


async def verdicts(gw: GatewayUnderTest, order: pb.Order, outcomes, secret: str) -> dict:
    """What a person sees: each file's fate, the stored photos' findings, the set's check."""
    listed = await gw.api().ListPhotos(pb.ListPhotosRequest(parent=order.name), metadata=md(secret))
    return {
        "outcomes": [(o.filename, o.stored, o.code) for o in outcomes],
        "photos": sorted(
            (p.filename, p.usable, sorted((f.code, f.blocking) for f in p.findings))
            for p in listed.photos
        ),
        "usable": listed.set_check.usable_count,
        "set": sorted(f.code for f in listed.set_check.findings),
    }


async def test_one_photo_per_call_or_all_in_one_give_the_same_verdicts(gw) -> None:
    tenant, secret = await gw.tenant()
    analysed = gw.neighbours.analyzer.analysed
    together = await new_order(gw, tenant, secret)
    answer = await upload(gw, together, secret, files())
    whole = await verdicts(gw, together, answer.outcomes, secret)

    one_by_one = await new_order(gw, tenant, secret)
    before = len(analysed)
    outcomes = []
    for item in files():
        try:
            answer = await upload(gw, one_by_one, secret, [item])
        except grpc.aio.AioRpcError as err:  # nothing stored: the outcomes ride in details
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            answer = pb.UploadPhotosResponse()
            status = status_of(err)
            assert status is not None
            assert any(d.Unpack(answer) for d in status.details if d.Is(answer.DESCRIPTOR))
        outcomes.extend(answer.outcomes)
    # Each photo's pixels were analysed once, though the set was judged eight times.
    assert len(analysed) - before == len(SET)
    assert await verdicts(gw, one_by_one, outcomes, secret) == whole
    # and the verdicts are the ones the photos call for
    codes = {o[0]: o[2] for o in whole["outcomes"]}
    assert codes["obama-senate-bioguide.jpg"] == "DUPLICATE"
    assert {n for n, c in codes.items() if c == "DIFFERENT_PERSON"} == {p.name for p in SET[6:]}
    assert whole["usable"] == 5


async def test_each_photo_is_stored_before_the_next_is_read_and_refusals_leave_nothing(
    gw,
) -> None:
    tenant, secret = await gw.tenant()
    order = await new_order(gw, tenant, secret)
    first, second = files()[0], files()[1]
    seen_mid_call: list[str] = []

    async def requests() -> AsyncIterator[pb.UploadPhotosRequest]:
        async for msg in first_photo_then_wait(gw, order, first, second, seen_mid_call):
            yield msg
        yield pb.UploadPhotosRequest(data=second[1][1000:])
        # The first photo again: a copy, refused by the set's verdict after it was stored.
        async for msg in chunks("", [("again-" + first[0], first[1])]):
            yield msg

    answer = await gw.api().UploadPhotos(requests(), metadata=md(secret))
    assert len(seen_mid_call) == 1  # the first photo, in the store while the call went on
    assert [(o.stored, o.code) for o in answer.outcomes] == [
        (True, ""),
        (True, ""),
        (False, "DUPLICATE"),
    ]
    kept = await stored_blobs(gw, order)
    assert sorted(k.rsplit("/", 1)[1] for k in kept) == sorted(
        f"{p.name.rsplit('/', 1)[1]}.jpg" for p in answer.photos
    )
    assert seen_mid_call[0] in kept


async def test_a_call_cut_off_midway_leaves_nothing_behind(gw) -> None:
    tenant, secret = await gw.tenant()
    order = await new_order(gw, tenant, secret)
    first, second = files()[0], files()[2]
    stored_before_cut: list[str] = []

    async def requests() -> AsyncIterator[pb.UploadPhotosRequest]:
        async for msg in first_photo_then_wait(gw, order, first, second, stored_before_cut):
            yield msg
        raise ConnectionAbortedError("the client went away")

    # grpc.aio answers a request stream that raises by cancelling the call.
    with pytest.raises((grpc.aio.AioRpcError, ConnectionAbortedError, asyncio.CancelledError)):
        await gw.api().UploadPhotos(requests(), metadata=md(secret))
    assert len(stored_before_cut) == 1  # the first photo was in the store when the call broke
    for _ in range(100):  # the gateway cleans up once it sees the cancellation
        if not await stored_blobs(gw, order):
            break
        await asyncio.sleep(0.1)
    assert await stored_blobs(gw, order) == []
    listed = await gw.api().ListPhotos(pb.ListPhotosRequest(parent=order.name), metadata=md(secret))
    assert list(listed.photos) == []
