"""The async SDK against a running gateway (real PostgreSQL, nats-server, gRPC; the workers
are the harness's SimWorkers): refused photos come back beside the stored ones, real errors
are raised with their details, an order runs to a downloaded folder and is erased."""

from __future__ import annotations

import io
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from PIL import Image

from clients.download import download_order
from clients.errors import error_details
from clients.sdk import HeadshotsClient, StageClock, connect
from headshots.v1 import headshots_pb2 as pb
from tests.support.gateway_harness import GatewayUnderTest, SimWorkers, png, start_gateway

pytestmark = pytest.mark.integration
FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"


@pytest.fixture(scope="module")
async def gw(postgres, nats_server, tmp_path_factory) -> AsyncIterator[GatewayUnderTest]:
    g = await start_gateway(postgres.url, nats_server.url, tmp_path_factory.mktemp("gwsdk"))
    workers = SimWorkers(g.bus, g.blobs)
    await workers.start()
    g.extra.append(workers)
    yield g
    await g.stop()


@pytest.fixture
async def admin(gw: GatewayUnderTest) -> AsyncIterator[HeadshotsClient]:
    async with connect(f"127.0.0.1:{gw.app.port}", gw.admin_token) as client:
        yield client


async def tenant_client(admin: HeadshotsClient, prefix: str) -> tuple[str, HeadshotsClient]:
    tenant, secret = await admin.bootstrap_tenant(f"{prefix}-{secrets.token_hex(4)}")
    return tenant, admin.with_token(secret)


def selfies(n: int = 8) -> list[Path]:
    files = sorted((FACES / "obama").glob("*.jpg")) + sorted((FACES / "others").glob("*.jpg"))
    return files[:n]


async def test_upload_returns_the_stored_and_the_refused_photos(admin: HeadshotsClient) -> None:
    tenant, client = await tenant_client(admin, "upload")
    order = await client.create_order(tenant, display_name="sdk upload")
    good = selfies(8)
    bad = [("zz-notes.jpg", b"not a photo"), ("blank.png", png((128, 128, 128), (400, 400)))]
    # Small chunks, so every photo crosses several messages.
    upload = await client.upload_photos(order.name, [*good, *bad], chunk_bytes=64 * 1024)

    assert not upload.all_kept
    assert sorted(p.filename for p in upload.stored.photos) == sorted(p.name for p in good)
    for photo in upload.stored.photos:
        source = Image.open(
            FACES / ("obama" if "obama" in photo.filename else "others") / photo.filename
        )
        assert photo.name.startswith(order.name + "/photos/") and photo.usable
        # The bytes arrived whole: the stored photo is the source (scaled down if large).
        long, short = max(source.size), min(source.size)
        assert (
            abs(max(photo.width, photo.height) / min(photo.width, photo.height) - long / short)
            < 0.01
        )
        assert max(photo.width, photo.height) <= long
    assert upload.stored.set_check.usable_count == len(good)
    assert sorted((r.filename, r.code) for r in upload.refused) == [
        ("blank.png", "NO_FACE"),
        ("zz-notes.jpg", "UNREADABLE"),
    ]
    for refused in upload.refused:
        assert refused.filename in refused.reason and refused.message, refused
    # What was stored is in the order; nothing of the refused ones is.
    assert (await client.get_order(order.name)).photo_count == len(good)


async def test_real_errors_are_raised_with_their_details(admin: HeadshotsClient) -> None:
    tenant, client = await tenant_client(admin, "errors")
    _, stranger = await tenant_client(admin, "stranger")
    order = await client.create_order(tenant, display_name="sdk errors")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stranger.upload_photos(order.name, selfies(1))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # An empty upload is a malformed call, not a set of refused photos.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.upload_photos(order.name, [])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(err.value).field_violations
    # Submitting an order without photos names what has to be true first.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit(order.name)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error_details(err.value)
    assert details.lines() and any("CREATED" in line for line in details.lines()), details


async def test_an_order_from_upload_to_a_folder_and_erasure(
    admin: HeadshotsClient, tmp_path: Path
) -> None:
    tenant, client = await tenant_client(admin, "run")
    clock = StageClock()
    seen: list[pb.Order] = []
    run = await client.run_order(
        tenant,
        selfies(8),
        within_s=60,
        on_update=seen.append,
        display_name="sdk run",
        candidate_count=10,
        result_count=3,
    )
    assert run.order.state == pb.ORDER_STATE_READY and run.upload.all_kept
    assert {"TRAINING", "READY"} <= set(run.clock.sequence) and seen[-1].state == run.order.state
    assert await client.watch(run.order.name, within_s=10, clock=clock) == run.order
    assert clock.sequence == ["READY"]
    assert [o.name for o in await client.list_orders(tenant)] == [run.order.name]

    got = await download_order(client, run.order.name, tmp_path / "out", keep_rejected=2)
    assert got.delivered == got.summary.delivered == 3
    delivered = sorted(f for f in got.files.values() if not f.startswith("rejected/"))
    assert len(delivered) == 3 and delivered[0].startswith("001-")
    assert len([f for f in got.files.values() if f.startswith("rejected/")]) == 2
    for name, file in got.files.items():
        data = (got.folder / file).read_bytes()
        assert data == await client.download(name)
        Image.open(io.BytesIO(data)).verify()
    sheet = got.sheet.read_text()
    assert all(f'src="{f}"' in sheet for f in delivered) and "Note:" not in sheet
    assert "a test model" in got.write_sheet("a test model").read_text()

    receipt = await client.erase(run.order.name)
    assert {"PHOTOS", "RESULTS", "DATA_KEY"} <= {e.data_class for e in receipt.entries}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.get_order(run.order.name)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_gives_up_at_its_deadline_with_the_last_state(admin: HeadshotsClient) -> None:
    tenant, client = await tenant_client(admin, "watch")
    order = await client.create_order(tenant, display_name="never submitted")
    with pytest.raises(TimeoutError, match="last state CREATED"):
        await client.watch(order.name, within_s=1.5)


async def test_keys_styles_and_preview(admin: HeadshotsClient) -> None:
    created = await admin.create_tenant("sdk-keys", "Keys & Co")
    assert created.name == "tenants/sdk-keys" and created.display_name == "Keys & Co"
    key = await admin.create_api_key("sdk-keys", "laptop")
    assert key.api_key.name.startswith("tenants/sdk-keys/apiKeys/") and key.secret
    client = admin.with_token(key.secret)
    styles = await client.list_styles()
    assert styles and all(s.id and s.prompt for s in styles)

    preview = await client.preview("sdk-keys", styles[0].id, selfies(1)[0], count=3)
    assert len(preview.images) == 3
    assert all(Image.open(io.BytesIO(i.data)).size == (i.width, i.height) for i in preview.images)

    assert (await admin.revoke_api_key(key.api_key.name)).revoke_time.seconds > 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.list_styles()
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
