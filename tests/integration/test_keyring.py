"""Encryption at rest and crypto-shredding, on a real PostgreSQL and real blob backends."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.embedded import Postgres, free_port
from services.common.db import engine as db
from services.common.keys.crypto import DecryptionError, generate_data_key
from services.common.keys.keyring import KeyDestroyed, KeyMissing, Keyring, KeyringError, data_keys
from services.common.settings import ServiceSettings
from services.common.storage.base import BlobNotFound, BlobStore, blob_key
from services.common.storage.encrypted import EncryptedBlobStore
from services.common.storage.factory import open_blob_store
from services.common.storage.local import LocalBlobStore
from services.common.storage.s3 import S3BlobStore

pytestmark = pytest.mark.integration

FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"
JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG"
TTL = 0.3  # short, so the cross-process test waits little; production default is 1 s


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = Postgres(tmp_path_factory.mktemp("pg") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def url(pg: Postgres) -> str:
    await db.migrate(pg.url, "keyring")
    return pg.url


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    eng = db.create_engine(url)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3"])
def inner(request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    bucket = f"b-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=bucket)
    return S3BlobStore(bucket, client=client)


@pytest.fixture
def master() -> bytes:
    return generate_data_key()


@pytest.fixture
def keyring(engine: AsyncEngine, master: bytes) -> Keyring:
    return Keyring(engine, master, "master-1", cache_ttl=TTL)


@pytest.fixture
def store(inner: BlobStore, keyring: Keyring) -> EncryptedBlobStore:
    return EncryptedBlobStore(inner, keyring)


def _order() -> tuple[str, str]:
    return "acme", f"o-{uuid.uuid4().hex[:10]}"


def _photos() -> tuple[bytes, bytes]:
    jpeg = next(FACES.rglob("*.jpg")).read_bytes()
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).convert("RGB").resize((64, 64)).save(buf, "PNG")
    return jpeg, buf.getvalue()


async def _fresh_database(pg: Postgres) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = db.create_engine(pg.url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return pg.url.replace("/postgres?", f"/{name}?")


async def _row(engine: AsyncEngine, tenant: str, order: str) -> sa.Row:
    async with engine.connect() as conn:
        query = sa.select(data_keys).where(
            data_keys.c.tenant_id == tenant, data_keys.c.order_id == order
        )
        return (await conn.execute(query)).one()


async def test_photos_at_rest_carry_no_image_signature(
    store: EncryptedBlobStore, inner: BlobStore
) -> None:
    t, o = _order()
    jpeg, png = _photos()
    for name, data, mime in (("1.jpg", jpeg, "image/jpeg"), ("2.png", png, "image/png")):
        key = blob_key(t, o, "photos", name)
        await store.put(key, data, mime)
        at_rest = await inner.get(key)
        assert not at_rest.startswith(JPEG_MAGIC) and not at_rest.startswith(PNG_MAGIC)
        assert data[16:48] not in at_rest
        assert await store.get(key) == data
    if isinstance(inner, LocalBlobStore):  # the file on disk itself
        on_disk = (inner.root / blob_key(t, o, "photos", "1.jpg")).read_bytes()
        assert not on_disk.startswith(JPEG_MAGIC)


async def test_keys_outside_orders_pass_through_unencrypted(
    store: EncryptedBlobStore, inner: BlobStore
) -> None:
    await store.put("models/manifest.json", b"{}")
    assert await inner.get("models/manifest.json") == b"{}"
    with pytest.raises(BlobNotFound):  # an order with no key yet has no blobs
        await store.get(blob_key(*_order(), "photos", "1.jpg"))


async def test_copy_taken_before_destroy_is_unreadable_after(
    store: EncryptedBlobStore,
    inner: BlobStore,
    keyring: Keyring,
    engine: AsyncEngine,
    master: bytes,
) -> None:
    t, o = _order()
    key = blob_key(t, o, "adapter", "lora.safetensors")
    await store.put(key, b"adapter weights")
    key_id = (await keyring.get(t, o)).key_id
    stolen = await inner.get(key)  # a backup, a replica, a copy someone made

    receipt = await keyring.destroy(t, o)
    assert receipt == hashlib.sha256(key_id.hex.encode()).hexdigest()
    assert await keyring.destroy(t, o) == receipt  # idempotent

    await inner.put(key, stolen)  # the copy comes back
    with pytest.raises(KeyDestroyed):
        await store.get(key)
    row = await _row(engine, t, o)
    assert row.wrapped_key is None and row.destroyed_at is not None  # the row stays as proof
    # a process holding the master key cannot bring it back either: nothing is left to unwrap
    with pytest.raises(KeyDestroyed):
        await Keyring(engine, master, "master-1").get(t, o)


async def test_put_after_destroy_is_refused_and_leaves_nothing(
    store: EncryptedBlobStore, inner: BlobStore, keyring: Keyring
) -> None:
    t, o = _order()
    await keyring.destroy(t, o)  # erased before anything was written: a tombstone
    key = blob_key(t, o, "adapter", "lora.safetensors")
    with pytest.raises(KeyDestroyed):
        await store.put(key, b"late adapter")
    assert not await inner.exists(key)


async def test_ciphertext_moved_to_another_key_fails_authentication(
    store: EncryptedBlobStore, inner: BlobStore
) -> None:
    t, o = _order()
    first, second = blob_key(t, o, "photos", "1.jpg"), blob_key(t, o, "photos", "2.jpg")
    await store.put(first, b"photo one")
    await store.put(second, b"photo two")
    await inner.put(second, await inner.get(first))  # swap a file under another name
    with pytest.raises(DecryptionError, match="does not authenticate"):
        await store.get(second)
    # and into another order (other data key) just the same
    t2, o2 = _order()
    await store.put(blob_key(t2, o2, "photos", "1.jpg"), b"theirs")
    await inner.put(blob_key(t2, o2, "photos", "1.jpg"), await inner.get(first))
    with pytest.raises(DecryptionError):
        await store.get(blob_key(t2, o2, "photos", "1.jpg"))


async def test_rotation_rewraps_keys_and_old_blobs_still_decrypt(
    pg: Postgres, inner: BlobStore, master: bytes
) -> None:
    # its own database: rotation covers every key in the keyring
    url = await _fresh_database(pg)
    await db.migrate(url, "keyring")
    engine = db.create_engine(url)
    try:
        await _rotate(engine, inner, master)
    finally:
        await engine.dispose()


async def _rotate(engine: AsyncEngine, inner: BlobStore, master: bytes) -> None:
    old = Keyring(engine, master, "old", cache_ttl=0)
    orders = [_order() for _ in range(3)]
    for t, o in orders:
        await EncryptedBlobStore(inner, old).put(blob_key(t, o, "photos", "1.jpg"), o.encode())
    destroyed = orders[2]
    await old.destroy(*destroyed)

    new_master, new_id = generate_data_key(), "new"
    assert await old.rewrap_all(new_master, new_id) == 2
    assert await old.rewrap_all(new_master, new_id) == 0  # nothing left under "old"
    for t, o in orders[:2]:
        row = await _row(engine, t, o)
        assert row.master_key_id == new_id
    assert (await _row(engine, *destroyed)).wrapped_key is None  # rotation does not resurrect

    fresh = EncryptedBlobStore(inner, Keyring(engine, new_master, new_id))  # old key retired
    for t, o in orders[:2]:
        assert await fresh.get(blob_key(t, o, "photos", "1.jpg")) == o.encode()
    with pytest.raises(KeyringError, match="does not have"):
        await Keyring(engine, master, "old-only").get(*orders[0])


async def test_destroy_is_seen_by_another_process_within_the_cache_ttl(
    url: str, inner: BlobStore, master: bytes, keyring: Keyring
) -> None:
    # A second engine and Keyring: what a trainer process sees while retention erases.
    other_engine = db.create_engine(url)
    other = EncryptedBlobStore(inner, Keyring(other_engine, master, "master-1", cache_ttl=TTL))
    try:
        t, o = _order()
        photo, adapter = blob_key(t, o, "photos", "1.jpg"), blob_key(t, o, "adapter", "a.bin")
        await other.put(photo, b"selfie")
        assert await other.get(photo) == b"selfie"  # its key is now cached over there

        await keyring.destroy(t, o)
        # writes are checked against the database at once, cache or not
        with pytest.raises(KeyDestroyed):
            await other.put(adapter, b"adapter from a trainer still running")
        assert not await inner.exists(adapter)
        # reads stop within the TTL
        await asyncio.sleep(TTL + 0.05)
        with pytest.raises(KeyDestroyed):
            await other.get(photo)
    finally:
        await other_engine.dispose()


async def test_concurrent_first_puts_agree_on_one_key(engine: AsyncEngine, master: bytes) -> None:
    t, o = _order()
    rings = [Keyring(engine, master, "master-1", cache_ttl=0) for _ in range(4)]
    keys = await asyncio.gather(*(rings[i % 4].get_or_create(t, o) for i in range(12)))
    assert len({k.key_id for k in keys}) == 1 and len({k.key for k in keys}) == 1


async def test_missing_keys_and_bad_ids_are_named(keyring: Keyring) -> None:
    with pytest.raises(KeyMissing, match="no data key for tenants/acme/orders/never"):
        await keyring.get("acme", "never")
    with pytest.raises(ValueError, match="order id 'A B'"):
        await keyring.get_or_create("acme", "A B")
    with pytest.raises(ValueError, match="cache_ttl"):
        Keyring(keyring.engine, generate_data_key(), "m", cache_ttl=5)


async def test_unmigrated_database_gets_a_clear_error(pg: Postgres, master: bytes) -> None:
    engine = db.create_engine(await _fresh_database(pg))
    try:
        with pytest.raises(KeyringError, match=r"db.migrate\(url, 'keyring'\)"):
            await Keyring(engine, master, "m").get_or_create("acme", "o1")
    finally:
        await engine.dispose()


async def test_open_blob_store_encrypts_when_a_master_key_is_configured(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    blob_url = f"file://{tmp_path}/blobs"
    plain = open_blob_store(ServiceSettings(blob_url=blob_url))
    assert isinstance(plain, LocalBlobStore)

    secret = base64.b64encode(generate_data_key()).decode()
    settings = ServiceSettings(blob_url=blob_url, master_key=secret, master_key_id="k8s-1")
    wrapped = open_blob_store(settings, engine=engine)
    assert isinstance(wrapped, EncryptedBlobStore)
    key = blob_key(*_order(), "photos", "1.jpg")
    await wrapped.put(key, JPEG_MAGIC + b"rest")
    assert not (await plain.get(key)).startswith(JPEG_MAGIC)
    assert await wrapped.get(key) == JPEG_MAGIC + b"rest"

    with pytest.raises(ValueError, match="needs engine="):
        open_blob_store(settings)
    short = ServiceSettings(blob_url=blob_url, master_key=base64.b64encode(b"x" * 16).decode())
    with pytest.raises(ValueError, match="32 bytes"):
        open_blob_store(short, engine=engine)
    with pytest.raises(ValueError, match="not valid base64"):
        open_blob_store(ServiceSettings(blob_url=blob_url, master_key="%%%"), engine=engine)
