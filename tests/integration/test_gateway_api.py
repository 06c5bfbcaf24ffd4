"""The gateway's public API over a real gRPC channel: an order from upload to erasure,
authentication, tenant isolation, and refused uploads (real PostgreSQL and nats-server)."""

from __future__ import annotations

import io
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from PIL import Image

from headshots.v1 import headshots_pb2 as pb
from services.common.grpc.errors import details_of, status_of
from tests.support.gateway_harness import GatewayUnderTest, SimWorkers, start_gateway

pytestmark = pytest.mark.integration
FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"


@pytest.fixture(scope="module")
async def gw(postgres, nats_server, tmp_path_factory) -> AsyncIterator[GatewayUnderTest]:
    g = await start_gateway(postgres.url, nats_server.url, tmp_path_factory.mktemp("gw"))
    workers = SimWorkers(g.bus, g.blobs)
    await workers.start()
    g.extra.append(workers)
    yield g
    await g.stop()


def selfies(n: int = 8) -> list[Path]:
    files = sorted((FACES / "obama").glob("*.jpg")) + sorted((FACES / "others").glob("*.jpg"))
    return files[:n]


def md(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


def chunks(parent: str, files: list[tuple[str, bytes]], size: int = 64 * 1024):
    async def gen() -> AsyncIterator[pb.UploadPhotosRequest]:
        first = True
        for name, data in files:
            for start in range(0, max(1, len(data)), size):
                msg = pb.UploadPhotosRequest(data=data[start : start + size])
                if start == 0:
                    msg.filename = name
                if first:
                    msg.parent, first = parent, False
                yield msg

    return gen()


async def new_order(gw: GatewayUnderTest, tenant: str, secret: str, **spec: object) -> pb.Order:
    return await gw.api().CreateOrder(
        pb.CreateOrderRequest(parent=f"tenants/{tenant}", order=pb.Order(**spec)),
        metadata=md(secret),
    )


async def upload(gw, order: pb.Order, secret: str, files: list[tuple[str, bytes]]):
    return await gw.api().UploadPhotos(chunks(order.name, files), metadata=md(secret))


def fixture_files(n: int = 8) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in selfies(n)]


async def stored_blobs(gw: GatewayUnderTest, order: pb.Order) -> list[str]:
    _, t, _, o = order.name.split("/")
    return [b.key for b in await gw.blobs.list(f"tenants/{t}/orders/{o}/")]


async def ready_order(gw: GatewayUnderTest, tenant: str, secret: str) -> pb.Order:
    order = await new_order(gw, tenant, secret, candidate_count=12, result_count=4)
    await upload(gw, order, secret, fixture_files(8))
    await gw.api().SubmitOrder(pb.SubmitOrderRequest(name=order.name), metadata=md(secret))
    last = order
    async for update in gw.api().WatchOrder(
        pb.WatchOrderRequest(name=order.name), metadata=md(secret)
    ):
        last = update.order
    return last


async def test_order_from_upload_to_erasure(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant("acme")
    api = gw.api()
    styles = await api.ListStyles(pb.ListStylesRequest(), metadata=md(secret))
    assert {s.id for s in styles.styles} >= {
        "navy-blazer-soft-studio-grey",
        "charcoal-suit-rembrandt-dark",
    }
    order = await new_order(
        gw, tenant, secret, display_name="me", candidate_count=12, result_count=4,
        style_ids=["navy-blazer-soft-studio-grey", "charcoal-suit-rembrandt-dark"],
    )  # fmt: skip
    assert order.state == pb.ORDER_STATE_CREATED and order.version == 1

    up = await upload(gw, order, secret, fixture_files(8))
    assert len(up.photos) == 8 and all(p.usable for p in up.photos)
    assert up.set_check.usable_count == 8
    listed = await api.ListPhotos(
        pb.ListPhotosRequest(parent=order.name, page_size=5), metadata=md(secret)
    )
    assert len(listed.photos) == 5 and listed.next_page_token
    rest = await api.ListPhotos(
        pb.ListPhotosRequest(parent=order.name, page_size=5, page_token=listed.next_page_token),
        metadata=md(secret),
    )
    assert len(rest.photos) == 3
    assert (await api.GetOrder(pb.GetOrderRequest(name=order.name), metadata=md(secret))).state == (
        pb.ORDER_STATE_UPLOADING
    )

    submitted = await api.SubmitOrder(pb.SubmitOrderRequest(name=order.name), metadata=md(secret))
    assert submitted.state == pb.ORDER_STATE_QUEUED
    states = []
    async for update in api.WatchOrder(pb.WatchOrderRequest(name=order.name), metadata=md(secret)):
        if not states or states[-1] != update.order.state:
            states.append(update.order.state)
    assert states[0] in (pb.ORDER_STATE_QUEUED, pb.ORDER_STATE_TRAINING)
    assert states[-1] == pb.ORDER_STATE_READY
    for s in (pb.ORDER_STATE_TRAINING, pb.ORDER_STATE_GENERATING):
        assert s in states

    res = await api.ListResults(pb.ListResultsRequest(parent=order.name), metadata=md(secret))
    assert [r.rank for r in res.results] == [1, 2, 3, 4]
    assert res.summary.candidates == 12 and res.summary.passed == 6 and res.summary.delivered == 4
    assert res.summary.by_reason["LOW_LIKENESS"] == 6
    assert all(r.scores.likeness > 0.5 for r in res.results)
    everything = await api.ListResults(
        pb.ListResultsRequest(parent=order.name, include_rejected=True, page_size=100),
        metadata=md(secret),
    )
    assert len(everything.results) == 12
    assert {tuple(r.rejection_reasons) for r in everything.results if not r.delivered} >= {
        ("LOW_LIKENESS",)
    }
    data = b""
    async for chunk in api.DownloadResult(
        pb.DownloadResultRequest(name=res.results[0].name), metadata=md(secret)
    ):
        data += chunk.data
    assert Image.open(io.BytesIO(data)).size == (96, 96)

    orders = await api.ListOrders(
        pb.ListOrdersRequest(parent=f"tenants/{tenant}"), metadata=md(secret)
    )
    assert order.name in [o.name for o in orders.orders]

    preview = await api.CreatePreview(
        pb.CreatePreviewRequest(
            parent=f"tenants/{tenant}",
            style_id="navy-blazer-soft-studio-grey",
            photo=fixture_files(1)[0][1],
            count=3,
        ),
        metadata=md(secret),
    )
    assert len(preview.images) == 3

    receipt = await api.DeleteOrder(pb.DeleteOrderRequest(name=order.name), metadata=md(secret))
    assert receipt.order == order.name
    assert {e.data_class for e in receipt.entries} >= {"DATA_KEY", "ROWS"}
    assert await stored_blobs(gw, order) == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.GetOrder(pb.GetOrderRequest(name=order.name), metadata=md(secret))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_create_order_is_idempotent_by_request_id(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant()
    request = pb.CreateOrderRequest(
        parent=f"tenants/{tenant}", request_id="7d0f5a52-3a8e-4c1e-9a51-2b9d8c1f0e11"
    )
    a = await gw.api().CreateOrder(request, metadata=md(secret))
    b = await gw.api().CreateOrder(request, metadata=md(secret))
    assert a.name == b.name


async def test_a_retried_preview_gets_the_same_images_and_a_reused_id_is_refused(
    gw: GatewayUnderTest,
) -> None:
    tenant, secret = await gw.tenant()
    request = pb.CreatePreviewRequest(
        parent=f"tenants/{tenant}",
        style_id="navy-blazer-soft-studio-grey",
        photo=fixture_files(1)[0][1],
        count=2,
        request_id="0b6f3c8e-2d1a-4e5f-9a7b-6c5d4e3f2a10",
    )
    first = await gw.api().CreatePreview(request, metadata=md(secret))
    again = await gw.api().CreatePreview(request, metadata=md(secret))
    # The client whose answer was lost gets the images it would have had, not a new draw.
    assert [i.seed for i in again.images] == [i.seed for i in first.images]
    assert [i.data for i in again.images] == [i.data for i in first.images]
    fresh = pb.CreatePreviewRequest()
    fresh.CopyFrom(request)
    fresh.request_id = "0b6f3c8e-2d1a-4e5f-9a7b-6c5d4e3f2a11"
    other = await gw.api().CreatePreview(fresh, metadata=md(secret))
    assert [i.seed for i in other.images] != [i.seed for i in first.images]
    # The same id asking for something else is refused, naming the field.
    changed = pb.CreatePreviewRequest()
    changed.CopyFrom(request)
    changed.count = 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gw.api().CreatePreview(changed, metadata=md(secret))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = [d for d in details_of(err.value) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info and info[0].reason == "REQUEST_ID_REUSED"


async def test_unauthenticated_without_a_valid_key(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant()
    api = gw.api()
    request = pb.ListOrdersRequest(parent=f"tenants/{tenant}")
    for metadata in ((), md("nonsense"), md(secret[:-4] + "AAAA"), md(gw.admin_token)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await api.ListOrders(request, metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await api.ListOrders(request, metadata=md(secret))
    key_name = await gw.admin().CreateApiKey(
        pb.CreateApiKeyRequest(parent=f"tenants/{tenant}"), metadata=gw.admin_md()
    )
    revoked = await gw.admin().RevokeApiKey(
        pb.RevokeApiKeyRequest(name=key_name.api_key.name), metadata=gw.admin_md()
    )
    assert revoked.HasField("revoke_time")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.ListOrders(request, metadata=md(key_name.secret))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Tenant keys cannot use the admin API.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gw.admin().CreateTenant(pb.CreateTenantRequest(), metadata=md(secret))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_tenant_cannot_reach_another_tenants_order(gw: GatewayUnderTest) -> None:
    a, a_key = await gw.tenant("a")
    b, b_key = await gw.tenant("b")
    order = await ready_order(gw, a, a_key)
    assert order.state == pb.ORDER_STATE_READY
    api = gw.api()
    results = await api.ListResults(pb.ListResultsRequest(parent=order.name), metadata=md(a_key))
    photos = await api.ListPhotos(pb.ListPhotosRequest(parent=order.name), metadata=md(a_key))
    before = (await stored_blobs(gw, order), order.version)

    async def refused(call) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert a not in (err.value.details() or "") and "not found" in err.value.details()

    async def drain(stream) -> None:
        async for _ in stream:
            pass

    bm = md(b_key)
    await refused(api.GetOrder(pb.GetOrderRequest(name=order.name), metadata=bm))
    await refused(api.ListPhotos(pb.ListPhotosRequest(parent=order.name), metadata=bm))
    await refused(api.DeletePhoto(pb.DeletePhotoRequest(name=photos.photos[0].name), metadata=bm))
    await refused(api.ListResults(pb.ListResultsRequest(parent=order.name), metadata=bm))
    await refused(
        drain(
            api.DownloadResult(pb.DownloadResultRequest(name=results.results[0].name), metadata=bm)
        )
    )
    await refused(drain(api.WatchOrder(pb.WatchOrderRequest(name=order.name), metadata=bm)))
    await refused(api.DeleteOrder(pb.DeleteOrderRequest(name=order.name), metadata=bm))
    await refused(api.SubmitOrder(pb.SubmitOrderRequest(name=order.name), metadata=bm))
    await refused(api.UploadPhotos(chunks(order.name, fixture_files(1)), metadata=bm))
    # A name under tenant B that points at A's order id is not A's order either.
    spoof = order.name.replace(f"tenants/{a}/", f"tenants/{b}/")
    await refused(api.GetOrder(pb.GetOrderRequest(name=spoof), metadata=bm))
    await refused(api.ListOrders(pb.ListOrdersRequest(parent=f"tenants/{a}"), metadata=bm))
    # A's order is untouched.
    after = await api.GetOrder(pb.GetOrderRequest(name=order.name), metadata=md(a_key))
    assert (await stored_blobs(gw, order), after.version) == before
    assert after.state == pb.ORDER_STATE_READY


def _bad_files() -> dict[str, tuple[bytes, str]]:
    jpeg = (FACES / "obama" / "obama-2012-portrait.jpg").read_bytes()
    bomb = io.BytesIO()
    Image.new("L", (12000, 12000)).save(bomb, "PNG")
    gif = io.BytesIO()
    frames = [Image.new("RGB", (300, 300), c) for c in ("red", "blue")]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    blank = io.BytesIO()
    Image.new("RGB", (400, 400), (128, 128, 128)).save(blank, "JPEG")
    return {
        "empty.jpg": (b"", "EMPTY"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "UNREADABLE"),
        "notes.jpg": (b"these are my notes, not a photo\n" * 20, "UNREADABLE"),
        "bomb.png": (bomb.getvalue(), "TOO_MANY_PIXELS"),
        "huge.jpg": (jpeg + secrets.token_bytes(25 * 1024 * 1024), "TOO_LARGE"),
        "animated.gif": (gif.getvalue(), "ANIMATED"),
        "wall.jpg": (blank.getvalue(), "NO_FACE"),
    }


async def test_bad_uploads_are_refused_with_reasons_and_nothing_stored(
    gw: GatewayUnderTest,
) -> None:
    tenant, secret = await gw.tenant()
    order = await new_order(gw, tenant, secret)
    bad = _bad_files()
    good = fixture_files(1)
    files = [*good, *((name, data) for name, (data, _) in bad.items())]
    # Partial success is a success, with an outcome for every photo sent.
    up = await upload(gw, order, secret, files)
    assert [p.filename for p in up.photos] == [good[0][0]]
    assert [o.index for o in up.outcomes] == list(range(len(files)))
    assert up.outcomes[0].stored and up.outcomes[0].photo == up.photos[0].name
    for index, (name, (_, code)) in enumerate(bad.items(), start=1):
        outcome = up.outcomes[index]
        assert (outcome.stored, outcome.filename, outcome.code) == (False, name, code)
        assert outcome.message
    keys = await stored_blobs(gw, order)
    assert len(keys) == 1 and keys[0].endswith(up.photos[0].name.rsplit("/", 1)[1] + ".jpg")
    listed = await gw.api().ListPhotos(pb.ListPhotosRequest(parent=order.name), metadata=md(secret))
    assert [p.name for p in listed.photos] == [p.name for p in up.photos]
    # Nothing stored: the call fails, every refusal a field violation, the outcomes attached.
    only_bad = [(name, data) for name, (data, _) in bad.items()]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await upload(gw, order, secret, only_bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = details_of(err.value)
    violations = next(d for d in details if isinstance(d, error_details_pb2.BadRequest))
    by_field = {v.field: v.description for v in violations.field_violations}
    for index, (name, (_, code)) in enumerate(bad.items()):
        assert by_field[f"photos[{index}]"].startswith(f"{code}: photo {index + 1} ({name})")
    info = next(d for d in details if isinstance(d, error_details_pb2.ErrorInfo))
    assert info.reason == "PHOTOS_REFUSED" and info.metadata["refused"] == str(len(bad))
    status = status_of(err.value)
    answer = pb.UploadPhotosResponse()
    assert any(d.Unpack(answer) for d in status.details if d.Is(answer.DESCRIPTOR))
    assert [o.code for o in answer.outcomes] == [code for _, code in bad.values()]
    assert len(await stored_blobs(gw, order)) == 1


async def test_gps_exif_is_accepted_and_stripped(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant()
    order = await new_order(gw, tenant, secret)
    img = Image.open(FACES / "obama" / "obama-2012-portrait.jpg")
    exif = img.getexif()
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    exif[0x0112] = 6  # rotate 90° on display
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif.tobytes())
    assert b"Exif" in out.getvalue()[:200]
    up = await upload(gw, order, secret, [("gps.jpg", out.getvalue())])
    (photo,) = up.photos
    assert (photo.width, photo.height) == (img.height, img.width)  # orientation applied
    (key,) = await stored_blobs(gw, order)
    stored = await gw.blobs.get(key)
    assert b"Exif" not in stored and b"GPS" not in stored
    reopened = Image.open(io.BytesIO(stored))
    assert dict(reopened.getexif()) == {} and "exif" not in reopened.info


async def test_twenty_first_photo_is_over_quota(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant()
    order = await new_order(gw, tenant, secret)
    files = fixture_files(21)
    assert len(files) == 21
    await upload(gw, order, secret, files[:20])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await upload(gw, order, secret, files[20:])
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = details_of(err.value)
    quota = next(d for d in details if isinstance(d, error_details_pb2.QuotaFailure))
    assert "20 photos" in quota.violations[0].description
    bad = next(d for d in details if isinstance(d, error_details_pb2.BadRequest))
    assert bad.field_violations[0].description.startswith("TOO_MANY_PHOTOS")
    assert "20 were stored before this call" in bad.field_violations[0].description
    assert len(await stored_blobs(gw, order)) == 20


async def test_twenty_one_photos_in_one_call_say_the_right_numbers(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant()
    order = await new_order(gw, tenant, secret)
    up = await upload(gw, order, secret, fixture_files(21))
    assert len(up.photos) == 20 and [o.stored for o in up.outcomes] == [True] * 20 + [False]
    last = up.outcomes[20]
    assert last.code == "TOO_MANY_PHOTOS"
    assert "0 were stored before this call and 20 earlier photo(s) of this call" in last.message


async def test_submit_needs_enough_photos(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant()
    order = await new_order(gw, tenant, secret)
    await upload(gw, order, secret, fixture_files(3))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gw.api().SubmitOrder(pb.SubmitOrderRequest(name=order.name), metadata=md(secret))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "at least 8" in err.value.details()
