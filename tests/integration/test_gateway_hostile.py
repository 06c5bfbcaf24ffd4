"""The public API under attack, over gRPC and REST with the real gateway: failed
authentication is throttled per client address and per key (successful callers elsewhere
are not), REST refuses oversized bodies (413) and headers (431) and absurd nesting (400,
never 500), and hostile or unusual photos get the right answer (bombs refused cheaply,
16-bit greyscale kept as a face, truncated HEIC called truncated)."""

from __future__ import annotations

import base64
import io
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from google.rpc import error_details_pb2
from PIL import Image

from headshots.v1 import headshots_pb2 as pb
from services.common.grpc.errors import details_of
from tests.support.gateway_harness import GatewayUnderTest, start_gateway

pytestmark = pytest.mark.integration
FACE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "faces" / "obama" / "obama-2012-portrait.jpg"
)


@pytest.fixture(scope="module")
async def gw(postgres, nats_server, tmp_path_factory) -> AsyncIterator[GatewayUnderTest]:
    g = await start_gateway(postgres.url, nats_server.url, tmp_path_factory.mktemp("gwhostile"))
    yield g
    await g.stop()


@pytest.fixture
async def own_gw(postgres, nats_server, tmp_path) -> AsyncIterator[GatewayUnderTest]:
    """A gateway of its own, for tests that lock 127.0.0.1 or the admin token out."""
    g = await start_gateway(postgres.url, nats_server.url, tmp_path)
    yield g
    await g.stop()


def md(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


def wrong_key() -> str:
    raw = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return f"hs_{secrets.token_hex(6)}_{raw}"


def client_from(gw: GatewayUnderTest, address: str) -> httpx.AsyncClient:
    """An HTTP client whose connections come from `address` (any of 127.0.0.0/8)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=gw.rest, transport=transport, timeout=30)


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def upload_stream(parent: str, files: list[tuple[str, bytes]]):
    async def gen() -> AsyncIterator[pb.UploadPhotosRequest]:
        first = True
        for name, data in files:
            for start in range(0, max(1, len(data)), 256 * 1024):
                msg = pb.UploadPhotosRequest(data=data[start : start + 256 * 1024])
                if start == 0:
                    msg.filename = name
                if first:
                    msg.parent, first = parent, False
                yield msg

    return gen()


# ------------------------------------------------------------------------------ auth


async def test_bad_keys_over_rest_throttle_that_address_only(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant("thr")
    orders = f"/v1/tenants/{tenant}/orders"
    async with client_from(gw, "127.0.0.2") as attacker, client_from(gw, "127.0.0.3") as other:
        for _ in range(20):
            r = await attacker.get(orders, headers={"authorization": f"Bearer {wrong_key()}"})
            assert r.status_code == 401
        r = await attacker.get(orders, headers={"authorization": f"Bearer {wrong_key()}"})
        assert r.status_code == 429, r.text
        body = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert body["reason"] == "AUTH_THROTTLED" and body["code"] == "RESOURCE_EXHAUSTED"
        assert 1 <= int(r.headers["retry-after"]) <= 60 and body["retryAfterSeconds"] > 0
        # Refused without looking at the secret: the right key fares no better from there.
        r = await attacker.get(orders, headers={"authorization": f"Bearer {secret}"})
        assert r.status_code == 429
        # Another address, and gRPC from 127.0.0.1, are not affected.
        r = await other.get(orders, headers={"authorization": f"Bearer {secret}"})
        assert r.status_code == 200, r.text
    listed = await gw.api().ListOrders(
        pb.ListOrdersRequest(parent=f"tenants/{tenant}"), metadata=md(secret)
    )
    assert list(listed.orders) == []


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(
    postgres, nats_server, tmp_path
) -> None:
    """Every call arrives from the ingress's address; X-Forwarded-For names the client. The
    guesser is locked out, a partner behind the same ingress is served, and a forged header
    from outside the trusted network buys the guesser nothing."""
    gw = await start_gateway(
        postgres.url, nats_server.url, tmp_path, trusted_proxies="127.0.0.0/29"
    )
    try:
        tenant, secret = await gw.tenant("behind-ingress")
        orders = f"/v1/tenants/{tenant}/orders"
        async with client_from(gw, "127.0.0.4") as ingress, client_from(gw, "127.0.3.1") as out:
            guesser = {"authorization": f"Bearer {wrong_key()}", "x-forwarded-for": "203.0.113.7"}
            for _ in range(20):
                assert (await ingress.get(orders, headers=guesser)).status_code == 401
            assert (await ingress.get(orders, headers=guesser)).status_code == 429
            partner = {"authorization": f"Bearer {secret}", "x-forwarded-for": "198.51.100.2"}
            r = await ingress.get(orders, headers=partner)
            assert r.status_code == 200, r.text
            # Not through the trusted network: the header is ignored, the peer is counted.
            forged = {"authorization": f"Bearer {wrong_key()}"}
            for n in range(20):
                r = await out.get(orders, headers={**forged, "x-forwarded-for": f"192.0.2.{n}"})
                assert r.status_code == 401
            r = await out.get(orders, headers={**forged, "x-forwarded-for": "192.0.2.99"})
            assert r.status_code == 429
    finally:
        await gw.stop()


async def test_guessing_one_key_from_many_addresses_locks_that_key(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant("victim")
    other_tenant, other_secret = await gw.tenant("bystander")
    key_id = secret.split("_")[1]
    raw_len = len(secret.split("_", 2)[2])
    guesses = 0
    for n in range(1, 7):  # 6 addresses × 18 guesses: under the per-address limit each
        async with client_from(gw, f"127.0.1.{n}") as c:
            for _ in range(18):
                guess = f"hs_{key_id}_{secrets.token_urlsafe(48)[:raw_len]}"
                r = await c.get(
                    f"/v1/tenants/{tenant}/orders", headers={"authorization": f"Bearer {guess}"}
                )
                assert r.status_code in (401, 429)
                guesses += 1
    assert guesses == 108
    async with client_from(gw, "127.0.2.1") as fresh:
        r = await fresh.get(
            f"/v1/tenants/{tenant}/orders", headers={"authorization": f"Bearer {secret}"}
        )
        assert r.status_code == 429 and r.json()["reason"] == "AUTH_THROTTLED"
        r = await fresh.get(
            f"/v1/tenants/{other_tenant}/orders",
            headers={"authorization": f"Bearer {other_secret}"},
        )
        assert r.status_code == 200, r.text


async def test_grpc_failures_are_throttled_with_retry_info_and_successes_never_are(
    own_gw: GatewayUnderTest,
) -> None:
    gw = own_gw
    tenant, secret = await gw.tenant("ok")
    api, admin = gw.api(), gw.admin()
    for _ in range(60):  # successful calls are never counted
        await api.ListOrders(pb.ListOrdersRequest(parent=f"tenants/{tenant}"), metadata=md(secret))
    for i in range(20):
        bad = md(wrong_key()) if i % 2 else md("wrong-admin-token")
        call = (
            api.ListOrders(pb.ListOrdersRequest(parent=f"tenants/{tenant}"), metadata=bad)
            if i % 2
            else admin.CreateTenant(pb.CreateTenantRequest(tenant_id="x-1"), metadata=bad)
        )
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for call in (
        api.ListOrders(pb.ListOrdersRequest(parent=f"tenants/{tenant}"), metadata=md(secret)),
        admin.CreateTenant(pb.CreateTenantRequest(tenant_id="x-2"), metadata=gw.admin_md()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = details_of(exc.value)
        retry = [d for d in details if isinstance(d, error_details_pb2.RetryInfo)]
        info = [d for d in details if isinstance(d, error_details_pb2.ErrorInfo)]
        assert retry and 0 < retry[0].retry_delay.ToTimedelta().total_seconds() <= 60
        assert info and info[0].reason == "AUTH_THROTTLED"


async def test_a_wrong_admin_token_flood_locks_the_admin_key(own_gw: GatewayUnderTest) -> None:
    gw = own_gw
    for n in range(1, 6):  # 5 addresses × 20 = the admin key's 100
        async with client_from(gw, f"127.0.3.{n}") as c:
            for _ in range(20):
                r = await c.post(
                    "/v1/tenants?tenantId=x-1",
                    json={"displayName": "x"},
                    headers={"authorization": "Bearer not-the-token"},
                )
                assert r.status_code == 401, r.text
    async with client_from(gw, "127.0.3.99") as c:
        r = await c.post(
            "/v1/tenants?tenantId=x-2",
            json={"displayName": "x"},
            headers={"authorization": f"Bearer {gw.admin_token}"},
        )
    assert r.status_code == 429 and r.json()["reason"] == "AUTH_THROTTLED"


# ------------------------------------------------------------------------------ REST limits


async def test_rest_body_over_the_cap_is_413(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant("big")
    body = json.dumps({"customPrompt": "a" * (9 * 1024 * 1024)})
    async with httpx.AsyncClient(base_url=gw.rest, timeout=60) as c:
        r = await c.post(
            f"/v1/tenants/{tenant}/orders",
            content=body,
            headers={"authorization": f"Bearer {secret}", "content-type": "application/json"},
        )
    assert r.status_code == 413, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 413


async def test_rest_oversized_headers_are_431(gw: GatewayUnderTest) -> None:
    async with httpx.AsyncClient(base_url=gw.rest) as c:
        r = await c.get("/v1/styles", headers={"authorization": "Bearer " + "x" * 10_000})
    assert r.status_code == 431, r.text
    assert r.json()["title"] == "REQUEST_HEADER_FIELDS_TOO_LARGE"


async def test_rest_json_nested_100000_deep_is_a_400_problem(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant("deep")
    h = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=gw.rest, timeout=30) as c:
        for body in ("[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000):
            r = await c.post(f"/v1/tenants/{tenant}/orders", content=body, headers=h)
            assert r.status_code == 400, r.text
            assert r.json()["title"] == "INVALID_ARGUMENT"
            assert "nested too deeply" in r.json()["detail"]
        # Deep, but within the parser: the message parser says no, still a 400.
        deep = '{"order": {"labels": ' + '{"a":' * 500 + "1" + "}" * 500 + "}}"
        r = await c.post(f"/v1/tenants/{tenant}/orders", content=deep, headers=h)
        assert r.status_code == 400, r.text


# ------------------------------------------------------------------------------ photos


async def new_order(gw: GatewayUnderTest, tenant: str, secret: str) -> pb.Order:
    return await gw.api().CreateOrder(
        pb.CreateOrderRequest(parent=f"tenants/{tenant}", order=pb.Order()), metadata=md(secret)
    )


async def test_photo_edge_cases_over_grpc(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant("photos")
    order = await new_order(gw, tenant, secret)
    face = Image.open(FACE).convert("RGB")
    gray16 = Image.fromarray((np.asarray(face.convert("L"), np.uint16) * 257).astype("<u2"))
    bomb = encode(Image.new("RGB", (7000, 7000), (120, 90, 60)), "JPEG", quality=1)[: 28 * 1024]
    heic = encode(face.resize((600, 750)), "HEIF", quality=80)
    files = [
        ("gray16.png", encode(gray16, "PNG")),
        ("palette.png", encode(face.quantize(colors=256), "PNG")),
        ("cmyk.jpg", encode(face.convert("CMYK"), "JPEG", quality=95)),
        ("bomb.jpg", bomb),
        ("cut.heic", heic[: len(heic) // 2]),
    ]
    # Partial success is a success: the refusals are the outcomes of photos 4 and 5.
    up = await gw.api().UploadPhotos(upload_stream(order.name, files), metadata=md(secret))
    refused = {o.index: o for o in up.outcomes if not o.stored}
    assert set(refused) == {3, 4}, refused
    assert refused[3].code == "UNREADABLE" and "truncated" in refused[3].message
    assert "truncated" in refused[4].message and "HEIC" in refused[4].message
    stored = await gw.api().ListPhotos(pb.ListPhotosRequest(parent=order.name), metadata=md(secret))
    by_name = {p.filename: p for p in stored.photos}
    # The 16-bit greyscale face is stored as a photo (not the near-white sheet it became),
    # and so are palette and CMYK: all usable.
    assert set(by_name) == {"gray16.png", "palette.png", "cmyk.jpg"}
    assert all(p.usable for p in by_name.values())
    assert max(by_name["gray16.png"].width, by_name["gray16.png"].height) <= 1536


async def test_bombs_over_rest_and_preview_are_refused(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant("bombs")
    order = await new_order(gw, tenant, secret)
    h = {"authorization": f"Bearer {secret}", "content-type": "image/png"}
    huge = encode(Image.new("1", (9000, 6000)), "PNG")  # 54 MP, a few KB
    async with httpx.AsyncClient(base_url=gw.rest, timeout=60) as c:
        r = await c.post(
            f"/v1/{order.name}/photos:upload?filename=huge.png", content=huge, headers=h
        )
        assert r.status_code == 400, r.text
        (violation,) = r.json()["violations"]
        assert violation["description"].startswith("TOO_MANY_PIXELS")
        assert "50,000,000" in violation["description"]
        assert "89478485" not in violation["description"]
        full_bomb = encode(Image.new("L", (7000, 7000), 128), "JPEG", quality=1)
        styles = await c.get("/v1/styles", headers={"authorization": f"Bearer {secret}"})
        style = styles.json()["styles"][0]["id"]
        r = await c.post(
            f"/v1/tenants/{tenant}/previews",
            json={"photo": base64.b64encode(huge).decode(), "count": 1, "styleId": style},
            headers={"authorization": f"Bearer {secret}"},
        )
        assert r.status_code == 400, r.text
        assert "TOO_MANY_PIXELS" in r.text
    # A complete 7000×7000 JPEG is decoded reduced, and the upload answers normally.
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await gw.api().UploadPhotos(
            upload_stream(order.name, [("flat.jpg", full_bomb)]), metadata=md(secret)
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NO_FACE" in str(details_of(exc.value))  # flat grey: decoded, no face in it
