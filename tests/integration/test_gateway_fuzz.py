"""No input a client can send is an INTERNAL error, and every error carries ErrorInfo.

Hypothesis builds request messages of every unary and server-streaming method of both public
services from their descriptors (names that resolve, names that almost do, text with NUL and
control characters, 5,000-character strings, out-of-range numbers and enum values, photo
bytes that are and are not images) and sends them over gRPC and, transcoded, over REST. The
gateway runs on the test's event loop; the property runs in a thread with blocking clients.
"""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from headshots.v1 import headshots_pb2 as pb
from services.common.grpc.errors import details_of
from services.gateway.app import SERVICES
from services.gateway.httprules import routes
from tests.support.gateway_harness import GatewayUnderTest, start_gateway

pytestmark = pytest.mark.integration
EXAMPLES = 8
T = FieldDescriptor
_INTS = {
    T.TYPE_INT32: (-(2**31), 2**31 - 1),
    T.TYPE_INT64: (-(2**63), 2**63 - 1),
    T.TYPE_UINT32: (0, 2**32 - 1),
    T.TYPE_UINT64: (0, 2**64 - 1),
}
# Server-side transport codes a generic client may see; everything else must be a decision.
NO_INFO_EXPECTED = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


@pytest.fixture(scope="module")
async def gw(postgres, nats_server, tmp_path_factory) -> AsyncIterator[GatewayUnderTest]:
    g = await start_gateway(postgres.url, nats_server.url, tmp_path_factory.mktemp("gwfuzz"))
    yield g
    await g.stop()


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (200, 200), (10, 120, 200)).save(out, "JPEG")
    return out.getvalue()


def texts(pool: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(pool),
        st.text(max_size=40),
        st.text(max_size=8).map(lambda s: s + "\x00" + s),
        st.sampled_from(pool).map(lambda s: s + "/x" if s else "\x7f"),
        st.just("é" * 5000),
        st.uuids().map(str),
    )


def field_values(fd: FieldDescriptor, pool: list[str], depth: int) -> st.SearchStrategy[Any]:
    if fd.type == T.TYPE_STRING:
        return texts(pool)
    if fd.type == T.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.just(jpeg()))
    if fd.type == T.TYPE_BOOL:
        return st.booleans()
    if fd.type == T.TYPE_ENUM:
        return st.integers(-3, 20)
    if fd.type in _INTS:
        lo, hi = _INTS[fd.type]
        return st.one_of(st.integers(lo, hi), st.integers(-2, 300))
    if fd.type in (T.TYPE_FLOAT, T.TYPE_DOUBLE):
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    if fd.type == T.TYPE_MESSAGE and depth < 2:
        return messages(fd.message_type, pool, depth + 1)
    return st.none()


def messages(desc: Descriptor, pool: list[str], depth: int = 0) -> st.SearchStrategy[Message]:
    parts = {}
    for fd in desc.fields:
        if fd.message_type is not None and (
            fd.message_type.GetOptions().map_entry
            or fd.message_type.full_name.startswith("google.protobuf.")
        ):
            continue  # maps and timestamps are output only in this API
        values = field_values(fd, pool, depth)
        parts[fd.name] = st.one_of(
            st.none(), st.lists(values, max_size=3) if fd.is_repeated else values
        )
    cls = GetMessageClass(desc)

    def build(values: dict[str, Any]) -> Message:
        msg = cls()
        for name, value in values.items():
            if value is None:
                continue
            target = getattr(msg, name)
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, Message):
                        target.add().CopyFrom(item)
                    elif item is not None:
                        target.append(item)
            elif isinstance(value, Message):
                target.CopyFrom(value)
            else:
                setattr(msg, name, value)
        return msg

    return st.fixed_dictionaries(parts).map(build)


def methods() -> list[tuple[str, Any]]:
    out = []
    for service in SERVICES:
        for m in service.methods:
            if not m.client_streaming:
                out.append((f"/{service.full_name}/{m.name}", m))
    return out


def grpc_property(gw: GatewayUnderTest, pool: list[str], keys: dict[str, str]) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{gw.app.port}")
    calls = methods()

    @settings(
        max_examples=EXAMPLES * len(calls),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        path, m = data.draw(st.sampled_from(calls))
        request = data.draw(messages(m.input_type, pool))
        md = (("authorization", f"Bearer {keys[m.containing_service.name]}"),)
        args = {
            "request_serializer": lambda x: x.SerializeToString(),
            "response_deserializer": GetMessageClass(m.output_type).FromString,
        }
        try:
            if m.server_streaming:
                list(channel.unary_stream(path, **args)(request, metadata=md, timeout=3))
            else:
                channel.unary_unary(path, **args)(request, metadata=md, timeout=10)
        except grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
            assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
                path,
                request,
                err,
            )
            if code not in NO_INFO_EXPECTED:
                assert any(isinstance(d, error_details_pb2.ErrorInfo) for d in details_of(err)), (
                    path,
                    code,
                )

    try:
        prop()
    finally:
        channel.close()


def rest_property(gw: GatewayUnderTest, pool: list[str], keys: dict[str, str]) -> None:
    table = [r for r in routes(*SERVICES) if not r.method.client_streaming]
    client = httpx.Client(base_url=gw.rest, timeout=10)

    @settings(
        max_examples=EXAMPLES * len(table),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        route = data.draw(st.sampled_from(table))
        request = data.draw(messages(route.method.input_type, pool))
        path = route.template
        for var in route.variables:
            value = data.draw(texts(pool))
            path = re.sub(r"\{" + re.escape(var) + r"=[^}]*\}", quote(value, safe="/"), path)
        body: Any = None
        if route.body == "*":
            body = json_format.MessageToDict(request)
        elif route.body:
            body = json_format.MessageToDict(getattr(request, route.body))
        garbage = data.draw(st.sampled_from([None, b"{", b"[" * 50_000, b"\x00\xff"]))
        headers = {"authorization": f"Bearer {keys[route.method.containing_service.name]}"}
        kwargs: dict[str, Any] = {"headers": headers}
        if route.method.server_streaming:
            kwargs["timeout"] = 3
        if garbage is not None and route.body:
            kwargs["content"] = garbage
            headers["content-type"] = "application/json"
        elif body is not None:
            kwargs["json"] = body
        try:
            r = client.request(route.http_method, path, **kwargs)
        except httpx.ReadTimeout:
            return  # a watch that keeps streaming: not an error
        assert r.status_code < 500 or r.status_code == 503, (route.template, path, r.text)
        if r.status_code >= 400:
            problem = r.json()
            assert problem["reason"] and problem["domain"] == "headshots.v1", r.text

    try:
        prop()
    finally:
        client.close()


async def test_no_request_message_is_an_internal_error(gw: GatewayUnderTest) -> None:
    tenant_id = f"fz-{uuid.uuid4().hex[:8]}"
    admin, am = gw.admin(), gw.admin_md()
    await admin.CreateTenant(
        pb.CreateTenantRequest(
            tenant_id=tenant_id, tenant=pb.Tenant(requests_per_minute=1_000_000)
        ),
        metadata=am,
    )
    key = await admin.CreateApiKey(
        pb.CreateApiKeyRequest(parent=f"tenants/{tenant_id}"), metadata=am
    )
    order = await gw.api().CreateOrder(
        pb.CreateOrderRequest(parent=f"tenants/{tenant_id}"),
        metadata=(("authorization", f"Bearer {key.secret}"),),
    )
    pool = [
        "",
        f"tenants/{tenant_id}",
        order.name,
        f"{order.name}/photos/p-000000000000",
        f"{order.name}/results/r0-00000",
        f"tenants/{tenant_id}/orders/o-0000000000000000",
        f"tenants/{tenant_id}/deletionReceipts/{uuid.uuid4()}",
        key.api_key.name,
        "tenants/other/orders/o-1",
        "navy-blazer-soft-studio-grey",
        "tenants/*/orders/*",
    ]
    keys = {"HeadshotService": key.secret, "AdminService": gw.admin_token}
    await asyncio.to_thread(grpc_property, gw, pool, keys)
    await asyncio.to_thread(rest_property, gw, pool, keys)
