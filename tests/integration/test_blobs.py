"""Both blob backends behave the same: local folder, and S3 (moto in server mode, real HTTP)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from devstack.embedded import free_port
from services.common.storage.base import (
    BlobNotFound,
    BlobStore,
    InvalidKey,
    blob_key,
    order_prefix,
    parse_order,
)
from services.common.storage.factory import open_blob_store
from services.common.storage.local import LocalBlobStore
from services.common.storage.s3 import S3BlobStore

pytestmark = pytest.mark.integration

CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
REGION = "us-east-1"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _s3(endpoint: str, bucket: str, prefix: str = "") -> S3BlobStore:
    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS)
    client.create_bucket(Bucket=bucket)
    return S3BlobStore(bucket, prefix, client=client)


@pytest.fixture(params=["local", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str
) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
    else:
        # a fresh bucket per test, under a bucket-level prefix like production's
        yield _s3(s3_endpoint, f"b-{os.urandom(4).hex()}", "env/dev")


PHOTO = blob_key("acme", "o1", "photos", "1.jpg")


async def test_put_get_exists_delete(store: BlobStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    info = await store.put(PHOTO, b"\xff\xd8\xff jpeg bytes", "image/jpeg")
    assert (info.key, info.size) == (PHOTO, 14) and info.modified > before
    assert await store.get(PHOTO) == b"\xff\xd8\xff jpeg bytes"
    assert await store.exists(PHOTO)

    await store.put(PHOTO, b"replaced")  # overwrite is allowed (jobs re-run with same names)
    assert await store.get(PHOTO) == b"replaced"

    assert await store.delete(PHOTO) is True
    assert await store.delete(PHOTO) is False
    assert not await store.exists(PHOTO)
    with pytest.raises(BlobNotFound, match=r"no blob at 'tenants/acme/orders/o1/photos/1\.jpg'"):
        await store.get(PHOTO)


async def test_list_by_prefix_and_delete_prefix(store: BlobStore) -> None:
    o1 = order_prefix("acme", "o1")
    keys = {
        blob_key("acme", "o1", "photos", "1.jpg"): b"a" * 10,
        blob_key("acme", "o1", "photos", "2.jpg"): b"b" * 20,
        blob_key("acme", "o1", "checkpoints", "step-500/adapter.safetensors"): b"c" * 30,
        blob_key("acme", "o12", "photos", "1.jpg"): b"d" * 40,  # shares "o1" as text prefix
        blob_key("other", "o1", "photos", "1.jpg"): b"e" * 50,
    }
    await asyncio.gather(*(store.put(k, v) for k, v in keys.items()))

    photos = await store.list(o1 + "photos/")
    assert [(b.key, b.size) for b in photos] == [
        ("tenants/acme/orders/o1/photos/1.jpg", 10),
        ("tenants/acme/orders/o1/photos/2.jpg", 20),
    ]
    assert len(await store.list(o1)) == 3
    assert len(await store.list("tenants/acme/orders/o1")) == 4  # plain string prefix
    assert len(await store.list("")) == 5
    assert await store.list("tenants/nobody/") == []

    assert await store.delete_prefix(o1) == (3, 60)
    assert await store.list(o1) == []
    assert [b.key for b in await store.list("tenants/")] == [
        "tenants/acme/orders/o12/photos/1.jpg",
        "tenants/other/orders/o1/photos/1.jpg",
    ]
    assert await store.delete_prefix(o1) == (0, 0)
    assert await store.get(blob_key("acme", "o12", "photos", "1.jpg")) == b"d" * 40


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "tenants/../../etc/passwd",
        "tenants/a/./b",
        "tenants//a",
        "tenants/a/",
        "tenants/.hidden",
        "tenants\\a",
        "tenants/a\x00b",
        "x" * 1025,
    ],
)
async def test_bad_keys_are_refused_before_touching_storage(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put(key, b"x")
    with pytest.raises(InvalidKey):
        await store.get(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)


@pytest.mark.parametrize("prefix", ["", "tenants/acme/orders/o1", "../"])
async def test_delete_prefix_needs_a_folder_style_prefix(store: BlobStore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        await store.delete_prefix(prefix)


async def test_s3_lists_and_deletes_across_pages_and_batches(s3_endpoint: str) -> None:
    # Small pages and batches stand in for S3's 1000-key limits without 1000 requests.
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION, **CREDENTIALS)
    client.create_bucket(Bucket="many")
    store = S3BlobStore("many", client=client, page_size=10, delete_batch=7)
    prefix = order_prefix("acme", "big")
    names = [f"{prefix}candidates/r0-{i:05d}.png" for i in range(45)]
    await asyncio.gather(*(store.put(k, b"xy") for k in names))
    calls: list[str] = []
    for op in ("ListObjectsV2", "DeleteObjects"):
        client.meta.events.register(f"before-call.s3.{op}", lambda op=op, **_: calls.append(op))
    listed = await store.list(prefix)
    assert [b.key for b in listed] == names
    assert await store.delete_prefix(prefix) == (45, 90)
    # 5 pages for list, 5 more for delete_prefix's own listing, then ceil(45/7) batches
    assert (calls.count("ListObjectsV2"), calls.count("DeleteObjects")) == (10, 7)
    assert client.list_objects_v2(Bucket="many").get("KeyCount") == 0


async def test_local_writes_leave_no_temp_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await asyncio.gather(*(store.put(PHOTO, bytes([i]) * 1000) for i in range(20)))
    folder = tmp_path / "tenants/acme/orders/o1/photos"
    assert os.listdir(folder) == ["1.jpg"]
    assert len(set(await store.get(PHOTO))) == 1  # one whole write won, no mix
    await store.delete(PHOTO)
    assert os.listdir(tmp_path) == []  # emptied folders are pruned


async def test_local_key_through_an_existing_blob_is_a_clear_error(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.put("tenants/a", b"x")
    with pytest.raises(InvalidKey, match="runs through an existing blob"):
        await store.put("tenants/a/b", b"y")


def test_keys_are_built_and_parsed_from_validated_ids() -> None:
    assert order_prefix("acme", "o-1") == "tenants/acme/orders/o-1/"
    key = blob_key("acme", "o-1", "adapter", "lora.safetensors")
    assert key == "tenants/acme/orders/o-1/adapter/lora.safetensors"
    assert parse_order(key) == ("acme", "o-1")
    assert parse_order("tenants/acme/orders/o-1/") == ("acme", "o-1")
    assert parse_order("tenants/acme/logo.png") is None
    assert parse_order("models/base.safetensors") is None
    for bad in ("Acme", "-x", "a_b", "a" * 64, "", "a/b"):
        with pytest.raises(InvalidKey, match="not a valid id"):
            order_prefix(bad, "o1")
    with pytest.raises(InvalidKey, match="order id 'O1'"):
        parse_order("tenants/acme/orders/O1/photos/1.jpg")  # never mistaken for a non-order key
    with pytest.raises(InvalidKey, match="blob kind"):
        blob_key("acme", "o1", "Photos", "1.jpg")
    with pytest.raises(InvalidKey):
        blob_key("acme", "o1", "photos", "../../x")


async def test_open_blob_store_from_urls(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    absolute = open_blob_store(f"file://{tmp_path}/abs")
    assert isinstance(absolute, LocalBlobStore) and absolute.root == tmp_path / "abs"
    relative = open_blob_store("file://./var/blobs", base_dir=tmp_path)
    assert isinstance(relative, LocalBlobStore) and relative.root == tmp_path / "var/blobs"

    boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION, **CREDENTIALS).create_bucket(
        Bucket="media"
    )
    s3 = open_blob_store(
        "s3://media/prod/blobs/", s3_endpoint_url=s3_endpoint, region_name=REGION, **CREDENTIALS
    )
    assert isinstance(s3, S3BlobStore) and (s3.bucket, s3.prefix) == ("media", "prod/blobs/")
    await s3.put(PHOTO, b"x")
    raw = s3.client.list_objects_v2(Bucket="media")["Contents"]
    assert [o["Key"] for o in raw] == [f"prod/blobs/{PHOTO}"]

    for bad in ("ftp://x", "s3:///nobucket", "file://", "/plain/path"):
        with pytest.raises(ValueError):
            open_blob_store(bad)
