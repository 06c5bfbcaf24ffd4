"""The public API's contract under a partner's and an attacker's hands (issue 17): errors that
always arrive with ErrorInfo, idempotent requests and retrievable receipts, per-photo upload
outcomes, honest end states, the same photo checks for previews, and the AIP surface, each
over gRPC and REST (real PostgreSQL, nats-server and the gateway)."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2 as rpb
from PIL import Image

from headshots.v1 import headshots_pb2 as pb
from services.common.db import engine as db
from services.common.grpc.errors import details_of
from services.gateway.tables import photos
from tests.integration.test_gateway_api import fixture_files, md, new_order, upload
from tests.support.gateway_harness import GatewayUnderTest, SimWorkers, start_gateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def gw(postgres, nats_server, tmp_path_factory) -> AsyncIterator[GatewayUnderTest]:
    g = await start_gateway(postgres.url, nats_server.url, tmp_path_factory.mktemp("gwc"))
    workers = SimWorkers(g.bus, g.blobs)
    await workers.start()
    g.extra.append(workers)
    yield g
    await g.stop()


async def failed(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


def info_of(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    return next(d for d in details_of(err) if isinstance(d, error_details_pb2.ErrorInfo))


def rest(gw: GatewayUnderTest, secret: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=gw.rest, headers={"authorization": f"Bearer {secret}"}, timeout=60
    )


def grey_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (400, 400), (128, 128, 128)).save(out, "JPEG")
    return out.getvalue()


# ------------------------------------------------------------------------------ errors


async def test_every_error_carries_error_info_and_names_the_field(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant()
    api, m = gw.api(), md(secret)
    # Empty and malformed names are the client's mistake, with the field named.
    for name in ("", "tenants/x/orders/NOT AN ID", "orders/o-1"):
        err = await failed(api.GetOrder(pb.GetOrderRequest(name=name), metadata=m))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert info_of(err).reason == "INVALID_NAME" and info_of(err).metadata["field"] == "name"
    err = await failed(api.ListOrders(pb.ListOrdersRequest(parent=""), metadata=m))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info_of(err).metadata["field"] == "parent"
    # NOT_FOUND and ALREADY_EXISTS carry ErrorInfo too.
    missing = f"tenants/{tenant}/orders/o-0000000000000000"
    err = await failed(api.GetOrder(pb.GetOrderRequest(name=missing), metadata=m))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert (info_of(err).reason, info_of(err).domain) == ("NOT_FOUND", "headshots.v1")
    err = await failed(
        gw.admin().CreateTenant(pb.CreateTenantRequest(tenant_id=tenant), metadata=gw.admin_md())
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and info_of(err).reason == "TENANT_EXISTS"
    async with rest(gw, secret) as client:
        r = await client.get(f"/v1/tenants/{tenant}/orders/NOPE")
        assert r.status_code == 400 and r.json()["reason"] == "INVALID_NAME"
        r = await client.get(f"/v1/{missing}")
        assert r.status_code == 404 and r.json()["reason"] == "NOT_FOUND"
        assert r.json()["domain"] == "headshots.v1"


async def test_errors_stay_small_and_never_echo_unbounded_input(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant()
    api, m = gw.api(), md(secret)
    parent = f"tenants/{tenant}"
    styles = [f"style-{i:05d}-" + "x" * 40 for i in range(10_000)]
    err = await failed(
        api.CreateOrder(
            pb.CreateOrderRequest(parent=parent, order=pb.Order(style_ids=styles)), metadata=m
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # a reason, not a transport error
    assert len(err.details()) <= 400 and info_of(err).metadata["field"] == "order.style_ids"
    err = await failed(
        api.CreateOrder(pb.CreateOrderRequest(parent=parent, request_id="r" * 2**20), metadata=m)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info_of(err).reason == "INVALID_REQUEST_ID" and "rrrr" not in err.details()
    err = await failed(
        api.CreateOrder(
            pb.CreateOrderRequest(parent=parent, order=pb.Order(display_name="a\0b")), metadata=m
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info_of(err).metadata["field"] == "order.display_name"
    # A NUL in a filename is stored and shown without it.
    order = await new_order(gw, tenant, secret)
    up = await upload(gw, order, secret, [("me\0.jpg", fixture_files(1)[0][1])])
    assert up.outcomes[0].stored and "\0" not in up.photos[0].filename
    async with rest(gw, secret) as client:
        deep = b"[" * 100_000 + b"]" * 100_000
        r = await client.post(
            f"/v1/{parent}/orders", content=deep, headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["reason"] == "INVALID_ARGUMENT"
        r = await client.post(f"/v1/{parent}/orders", json={"styleIds": styles})
        assert r.status_code == 400 and len(r.content) < 8 * 1024


# ------------------------------------------------------------------------------ idempotency


async def test_request_ids_are_uuids_bound_to_one_request(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant()
    api, m, parent = gw.api(), md(secret), f"tenants/{tenant}"
    rid = str(uuid.uuid4())
    first = pb.CreateOrderRequest(parent=parent, request_id=rid, order=pb.Order(display_name="a"))
    a = await api.CreateOrder(first, metadata=m)
    b = await api.CreateOrder(first, metadata=m)
    assert a.name == b.name
    other = pb.CreateOrderRequest(parent=parent, request_id=rid, order=pb.Order(display_name="b"))
    err = await failed(api.CreateOrder(other, metadata=m))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert info_of(err).reason == "REQUEST_ID_REUSED"
    async with rest(gw, secret) as client:
        r = await client.post(
            f"/v1/{parent}/orders", params={"requestId": rid}, json={"displayName": "a"}
        )
        assert r.status_code == 200 and r.json()["name"] == a.name
        r = await client.post(
            f"/v1/{parent}/orders", params={"requestId": rid}, json={"displayName": "b"}
        )
        assert r.status_code == 409 and r.json()["reason"] == "REQUEST_ID_REUSED"
        r = await client.post(f"/v1/{parent}/orders", params={"requestId": "req-1"}, json={})
        assert r.status_code == 400 and r.json()["reason"] == "INVALID_REQUEST_ID"


async def test_delete_order_returns_the_same_receipt_on_every_retry(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant()
    api, m = gw.api(), md(secret)
    order = await new_order(gw, tenant, secret)
    rid = str(uuid.uuid4())
    request = pb.DeleteOrderRequest(name=order.name, request_id=rid)
    receipt = await api.DeleteOrder(request, metadata=m)
    assert receipt.name == f"tenants/{tenant}/deletionReceipts/{receipt.receipt_id}"
    assert await api.DeleteOrder(request, metadata=m) == receipt  # the lost answer, again
    # The same name without the id (the order is gone) also finds its receipt.
    assert await api.DeleteOrder(pb.DeleteOrderRequest(name=order.name), metadata=m) == receipt
    got = await api.GetDeletionReceipt(pb.GetDeletionReceiptRequest(name=receipt.name), metadata=m)
    assert got == receipt
    other = await new_order(gw, tenant, secret)
    err = await failed(
        api.DeleteOrder(pb.DeleteOrderRequest(name=other.name, request_id=rid), metadata=m)
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    # Another tenant cannot read it.
    _, b_key = await gw.tenant("b")
    err = await failed(
        api.GetDeletionReceipt(pb.GetDeletionReceiptRequest(name=receipt.name), metadata=md(b_key))
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    async with rest(gw, secret) as client:
        rid2 = str(uuid.uuid4())
        r1 = await client.delete(f"/v1/{other.name}", params={"requestId": rid2})
        r2 = await client.delete(f"/v1/{other.name}", params={"requestId": rid2})
        assert r1.status_code == r2.status_code == 200 and r1.json() == r2.json()
        r = await client.get(f"/v1/{r1.json()['name']}")
        assert r.status_code == 200 and r.json()["receiptId"] == r1.json()["receiptId"]


# ------------------------------------------------------------------------------ uploads


async def test_duplicate_names_the_kept_photos_file(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant()
    order = await new_order(gw, tenant, secret)
    (name, data), *_ = fixture_files(1)
    await upload(gw, order, secret, [(name, data)])
    up = await upload(gw, order, secret, [(name, data), *fixture_files(3)[1:]])
    again = up.outcomes[0]
    assert (again.stored, again.code) == (False, "DUPLICATE")
    assert repr(name) in again.message and not re.search(r"\bp-[0-9a-f]{12}\b", again.message)
    assert [o.stored for o in up.outcomes[1:]] == [True, True]
    async with rest(gw, secret) as client:
        r = await client.post(
            f"/v1/{order.name}/photos:upload",
            params={"filename": "again.jpg"},
            content=data,
            headers={"content-type": "image/jpeg"},
        )
        assert r.status_code == 400 and r.json()["reason"] == "PHOTOS_REFUSED"
        assert repr(name) in r.json()["violations"][0]["description"]


async def test_submit_reuses_the_upload_verdict_and_a_deletion_rejudges_from_facts(
    gw: GatewayUnderTest,
) -> None:
    tenant, secret = await gw.tenant()
    analyzer = gw.neighbours.analyzer
    api, m, calls, images = gw.api(), md(secret), analyzer.calls, analyzer.images
    order = await new_order(gw, tenant, secret)
    before = len(calls)
    up = await upload(gw, order, secret, fixture_files(9))
    # Each photo analysed once as it arrived, then the set judged from their facts.
    assert images[before:] == [1] * 9 + [0] and calls[-1] == 9
    before = len(calls)
    submitted = await api.SubmitOrder(pb.SubmitOrderRequest(name=order.name), metadata=m)
    assert submitted.state == pb.ORDER_STATE_QUEUED and len(calls) == before  # no re-analysis
    other = await new_order(gw, tenant, secret)
    up = await upload(gw, other, secret, fixture_files(9))
    before = len(calls)
    await api.DeletePhoto(pb.DeletePhotoRequest(name=up.photos[0].name), metadata=m)
    assert calls[before:] == [8] and images[before:] == [0]  # the changed set, from facts
    check = await api.ListPhotos(pb.ListPhotosRequest(parent=other.name), metadata=m)
    assert check.set_check.usable_count == 8
    before = len(calls)
    async with rest(gw, secret) as client:
        r = await client.post(f"/v1/{other.name}:submit", json={})
    assert r.status_code == 200 and r.json()["photoCount"] == 8
    assert calls[before:] == []  # judged at the deletion already


async def test_photos_stored_before_facts_existed_are_measured_once(
    gw: GatewayUnderTest, postgres
) -> None:
    """A field database's rows have no facts: the next upload analyses their images once,
    stores their facts, and the set's verdict is the same as with facts."""
    tenant, secret = await gw.tenant()
    analyzer = gw.neighbours.analyzer
    order = await new_order(gw, tenant, secret)
    files = fixture_files(4)
    await upload(gw, order, secret, files[:3])
    order_id = order.name.rsplit("/", 1)[1]
    engine = db.create_engine(postgres.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(photos).where(photos.c.order_id == order_id).values(selfie_facts=None)
            )
        before = len(analyzer.images)
        # The fourth photo, and a copy of the first: still a duplicate of the old row.
        up = await upload(gw, order, secret, [files[3], ("copy.jpg", files[0][1])])
        # new photo, copy (each alone), then the three old rows once each, then the set
        assert analyzer.images[before:] == [1, 1, 1, 1, 1, 0]
        assert [(o.stored, o.code) for o in up.outcomes] == [(True, ""), (False, "DUPLICATE")]
        assert repr(files[0][0]) in up.outcomes[1].message
        async with engine.connect() as conn:
            rows = list(await conn.execute(sa.select(photos).where(photos.c.order_id == order_id)))
        assert len(rows) == 4 and all(r.selfie_facts for r in rows)
        before = len(analyzer.images)
        await upload(gw, order, secret, fixture_files(5)[4:])
        assert analyzer.images[before:] == [1, 0]  # facts from now on
    finally:
        await engine.dispose()


async def test_preview_applies_the_upload_photo_checks(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant()
    request = pb.CreatePreviewRequest(
        parent=f"tenants/{tenant}", style_id="navy-blazer-soft-studio-grey", photo=grey_jpeg()
    )
    err = await failed(gw.api().CreatePreview(request, metadata=md(secret)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info_of(err).metadata["code"] == "NO_FACE"
    async with rest(gw, secret) as client:
        r = await client.post(
            f"/v1/tenants/{tenant}/previews",
            json={"styleId": request.style_id, "photo": "bm90IGFuIGltYWdl"},  # "not an image"
        )
        assert r.status_code == 400 and r.json()["violations"][0]["field"] == "photo"
        assert r.json()["violations"][0]["description"].startswith("UNREADABLE")


# ------------------------------------------------------------------------------ end states


async def test_watch_on_an_unsubmitted_order_returns_it_and_ends(gw: GatewayUnderTest) -> None:
    tenant, secret = await gw.tenant()
    order = await new_order(gw, tenant, secret)
    seen = [
        u.order.state
        async for u in gw.api().WatchOrder(
            pb.WatchOrderRequest(name=order.name), metadata=md(secret), timeout=10
        )
    ]
    assert seen == [pb.ORDER_STATE_CREATED]
    async with rest(gw, secret) as client:
        r = await client.get(f"/v1/{order.name}:watch", timeout=10)
        lines = [line for line in r.text.splitlines() if line]
        assert len(lines) == 1 and "ORDER_STATE_CREATED" in lines[0]


async def test_nothing_passing_ends_failed_with_reason_and_counts(gw: GatewayUnderTest) -> None:
    workers = next(x for x in gw.extra if isinstance(x, SimWorkers))
    tenant, secret = await gw.tenant()
    order = await new_order(gw, tenant, secret, candidate_count=8, result_count=2)
    await upload(gw, order, secret, fixture_files(8))
    workers.pass_every = 0  # every candidate fails the quality gates
    try:
        await gw.api().SubmitOrder(pb.SubmitOrderRequest(name=order.name), metadata=md(secret))
        updates = [
            u.order
            async for u in gw.api().WatchOrder(
                pb.WatchOrderRequest(name=order.name), metadata=md(secret), timeout=60
            )
        ]
    finally:
        workers.pass_every = 2
    last = updates[-1]
    assert last.state == pb.ORDER_STATE_FAILED and last.delivered_count == 0
    assert last.failure_reason.startswith("NOTHING_PASSED")
    assert "0 delivered" in last.failure_reason and "LOW_LIKENESS" in last.failure_reason
    # Progress reads as words for a person: no worker-internal batch ids ("b7").
    details = {u.progress.detail for u in updates}
    assert details and not any(re.search(r"\bb\d+\b", d) for d in details)
    rejected = await gw.api().ListResults(
        pb.ListResultsRequest(parent=order.name, include_rejected=True), metadata=md(secret)
    )
    assert rejected.summary.delivered == 0 and len(rejected.results) == rejected.summary.candidates
    async with rest(gw, secret) as client:
        r = await client.get(f"/v1/{order.name}")
        assert r.json()["state"] == "ORDER_STATE_FAILED"
        assert r.json()["failureReason"].startswith("NOTHING_PASSED")


# ------------------------------------------------------------------------------ AIP surface


async def test_admin_gets_and_lists_tenants_and_keys(gw: GatewayUnderTest) -> None:
    tenant, _ = await gw.tenant("adm")
    admin, am = gw.admin(), gw.admin_md()
    got = await admin.GetTenant(pb.GetTenantRequest(name=f"tenants/{tenant}"), metadata=am)
    assert got.name == f"tenants/{tenant}" and got.display_name == "adm"
    names, token = [], ""
    while True:
        page = await admin.ListTenants(
            pb.ListTenantsRequest(page_size=2, page_token=token), metadata=am
        )
        names += [t.name for t in page.tenants]
        token = page.next_page_token
        if not token:
            break
    assert f"tenants/{tenant}" in names
    keys = await admin.ListApiKeys(pb.ListApiKeysRequest(parent=f"tenants/{tenant}"), metadata=am)
    (key,) = keys.api_keys
    assert (await admin.GetApiKey(pb.GetApiKeyRequest(name=key.name), metadata=am)) == key
    async with rest(gw, gw.admin_token) as client:
        r = await client.get(f"/v1/tenants/{tenant}/apiKeys")
        assert r.status_code == 200 and r.json()["apiKeys"][0]["name"] == key.name
        r = await client.get(f"/v1/tenants/{tenant}")
        assert r.status_code == 200 and r.json()["displayName"] == "adm"


async def test_reflection_serves_v1_and_v1alpha(gw: GatewayUnderTest) -> None:
    request = rpb.ServerReflectionRequest(list_services="")
    for service in (
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ):
        call = gw.channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=rpb.ServerReflectionRequest.SerializeToString,
            response_deserializer=rpb.ServerReflectionResponse.FromString,
        )

        async def one():
            yield request

        replies = [r async for r in call(one())]
        listed = {s.name for s in replies[0].list_services_response.service}
        assert {"headshots.v1.HeadshotService", "headshots.v1.AdminService"} <= listed, service
