"""REST transcoded from the protos: the same operations as gRPC through an HTTP client, RFC
9457 problems for errors, the generated OpenAPI document, and a bounded schemathesis run
that must find no server error."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate
from PIL import Image

from tests.support.gateway_harness import GatewayUnderTest, SimWorkers, start_gateway

pytestmark = pytest.mark.integration
FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"


@pytest.fixture(scope="module")
async def gw(postgres, nats_server, tmp_path_factory) -> AsyncIterator[GatewayUnderTest]:
    g = await start_gateway(postgres.url, nats_server.url, tmp_path_factory.mktemp("gwrest"))
    workers = SimWorkers(g.bus, g.blobs)
    await workers.start()
    g.extra.append(workers)
    yield g
    await g.stop()


def selfies(n: int) -> list[Path]:
    files = sorted((FACES / "obama").glob("*.jpg")) + sorted((FACES / "others").glob("*.jpg"))
    return files[:n]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def rest_tenant(client: httpx.AsyncClient, admin: str) -> tuple[str, str]:
    h = {"authorization": f"Bearer {admin}"}
    r = await client.post("/v1/tenants", json={"displayName": "rest"}, headers=h)
    assert r.status_code == 200, r.text
    tenant = r.json()["name"].split("/")[1]
    r = await client.post(f"/v1/tenants/{tenant}/apiKeys", json={"displayName": "k"}, headers=h)
    assert r.status_code == 200, r.text
    return tenant, r.json()["secret"]


async def test_openapi_document_is_valid_and_covers_every_rpc(gw: GatewayUnderTest) -> None:
    async with httpx.AsyncClient(base_url=gw.rest) as client:
        doc = (await client.get("/openapi.json")).json()
    validate(doc)
    ops = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    assert len(ops) == 21
    assert "HeadshotService_UploadPhotos" in ops and "AdminService_RevokeApiKey" in ops
    assert {"AdminService_GetTenant", "AdminService_ListTenants", "AdminService_GetApiKey"} <= ops
    assert {"AdminService_ListApiKeys", "HeadshotService_GetDeletionReceipt"} <= ops
    assert "/v1/tenants/{tenant}/orders/{order}:watch" in doc["paths"]


async def test_order_through_rest(gw: GatewayUnderTest) -> None:
    async with httpx.AsyncClient(base_url=gw.rest, timeout=60) as client:
        tenant, secret = await rest_tenant(client, gw.admin_token)
        h = {"authorization": f"Bearer {secret}"}
        r = await client.post(
            f"/v1/tenants/{tenant}/orders",
            json={"displayName": "rest", "candidateCount": 8, "resultCount": 2},
            headers=h,
        )
        assert r.status_code == 200, r.text
        order = r.json()
        assert order["state"] == "ORDER_STATE_CREATED"
        name = order["name"]

        files = selfies(7)
        body = [
            {"parent": name, "filename": p.name, "data": b64(p.read_bytes())} for p in files[:6]
        ]
        body.append({"filename": "notes.jpg", "data": b64(b"not an image at all")})
        r = await client.post(f"/v1/{name}/photos:upload", json=body, headers=h)
        # Partial success is a success: six stored, the seventh refused with its reason.
        assert r.status_code == 200, r.text
        stored = r.json()
        assert len(stored["photos"]) == 6
        outcomes = stored["outcomes"]
        assert [o.get("stored", False) for o in outcomes] == [True] * 6 + [False]
        assert outcomes[6]["code"] == "UNREADABLE" and outcomes[6]["filename"] == "notes.jpg"
        # Nothing stored: an error with the refusal as a field violation.
        r = await client.post(
            f"/v1/{name}/photos:upload",
            json={"filename": "notes.jpg", "data": b64(b"not an image at all")},
            headers=h,
        )
        assert r.status_code == 400
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["status"] == 400 and problem["code"] == "INVALID_ARGUMENT"
        assert problem["reason"] == "PHOTOS_REFUSED" and problem["domain"] == "headshots.v1"
        assert problem["violations"][0]["field"] == "photos[0]"
        assert problem["violations"][0]["description"].startswith("UNREADABLE: photo 1")
        # One more as raw bytes, one more as a single JSON message.
        r = await client.post(
            f"/v1/{name}/photos:upload?filename={files[6].name}",
            content=files[6].read_bytes(),
            headers={**h, "content-type": "image/jpeg"},
        )
        assert r.status_code == 200, r.text
        extra = selfies(8)[7]
        r = await client.post(
            f"/v1/{name}/photos:upload",
            json={"filename": extra.name, "data": b64(extra.read_bytes())},
            headers=h,
        )
        assert r.status_code == 200, r.text
        r = await client.get(f"/v1/{name}/photos", params={"pageSize": 20}, headers=h)
        assert len(r.json()["photos"]) == 8

        r = await client.post(f"/v1/{name}:submit", json={}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "ORDER_STATE_QUEUED"
        states = []
        async with client.stream("GET", f"/v1/{name}:watch", headers=h) as stream:
            assert stream.headers["content-type"].startswith("application/x-ndjson")
            async for line in stream.aiter_lines():
                if line:
                    states.append(json.loads(line)["order"]["state"])
        assert states[-1] == "ORDER_STATE_READY"

        r = await client.get(f"/v1/{name}/results", params={"includeRejected": "true"}, headers=h)
        listing = r.json()
        assert listing["summary"]["candidates"] == 8 and len(listing["results"]) == 8
        best = next(x for x in listing["results"] if x.get("rank") == 1)
        assert "likeness" in best["scores"] and "quality" in best["scores"]
        r = await client.get(f"/v1/{best['name']}:download", headers=h)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size == (96, 96)

        r = await client.post(
            f"/v1/tenants/{tenant}/previews",
            json={
                "styleId": "navy-blazer-soft-studio-grey",
                "photo": b64(files[0].read_bytes()),
                "count": 1,
            },
            headers=h,
        )
        assert r.status_code == 200 and len(r.json()["images"]) == 1

        r = await client.get(f"/v1/tenants/{tenant}/orders", headers=h)
        assert [o["name"] for o in r.json()["orders"]] == [name]
        r = await client.get(
            f"/v1/tenants/{tenant}/orders", params={"state": "ORDER_STATE_FAILED"}, headers=h
        )
        assert r.json().get("orders", []) == []

        # Errors as problems: no key, another tenant, unknown route, bad JSON.
        r = await client.get(f"/v1/{name}")
        assert r.status_code == 401 and r.json()["title"] == "UNAUTHENTICATED"
        _other, other_key = await rest_tenant(client, gw.admin_token)
        r = await client.get(f"/v1/{name}", headers={"authorization": f"Bearer {other_key}"})
        assert r.status_code == 404
        r = await client.post(f"/v1/tenants/{tenant}/orders", content=b"{", headers=h)
        assert r.status_code == 400 and r.json()["title"] == "INVALID_ARGUMENT"
        r = await client.get("/v1/nothing/here", headers=h)
        assert r.status_code == 404

        r = await client.delete(f"/v1/{name}", headers=h)
        assert r.status_code == 200, r.text
        assert {e["dataClass"] for e in r.json()["entries"]} >= {"DATA_KEY", "ROWS"}
        r = await client.get(f"/v1/{name}", headers=h)
        assert r.status_code == 404


async def test_schemathesis_finds_no_server_errors(gw: GatewayUnderTest, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=gw.rest) as client:
        tenant, secret = await rest_tenant(client, gw.admin_token)
        r = await client.post(
            f"/v1/tenants/{tenant}/orders", json={}, headers={"authorization": f"Bearer {secret}"}
        )
        order = r.json()["name"].rsplit("/", 1)[1]
    # Real ids for the path, so generated requests reach the handlers, not only 404s.
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.tenant" = "{tenant}"\n"path.order" = "{order}"\n')
    st = Path(sys.executable).parent / "schemathesis"
    proc = await asyncio.create_subprocess_exec(
        str(st),
        "--config-file",
        str(config),
        "run",
        f"{gw.rest}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "8",
        # A watch of a live order streams until the order ends: a request that never
        # finishes by design (test_gateway_watch covers it).
        "--exclude-operation-id",
        "HeadshotService_WatchOrder",
        "--phases",
        "examples,fuzzing",
        "--header",
        f"Authorization: Bearer {secret}",
        "--request-timeout",
        "20",
        "--seed",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    print(text)
    assert "passed" in text and "Server error" not in text
