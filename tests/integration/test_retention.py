"""Retention against a real PostgreSQL and an encrypted local blob store.

The clock is injected, so "30 days later" is a call, not a wait.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from devstack.embedded import Postgres
from services.common.db import engine as db
from services.common.keys.keyring import KeyDestroyed, Keyring
from services.common.storage.base import blob_key
from services.common.storage.encrypted import EncryptedBlobStore
from services.common.storage.factory import open_blob_store
from services.retention.clock import FixedClock
from services.retention.core import Retention
from services.retention.order_rows import scan_for_order
from services.retention.tables import ledger, schedule

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
JPEG = b"\xff\xd8\xff\xe0" + secrets.token_bytes(2000)
PNG = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(3000)


class Env:
    def __init__(self, url: str, blob_dir: Path, master: bytes) -> None:
        self.url = url
        self.blob_dir = blob_dir
        self.master = master
        self.engine = db.create_engine(url)
        self.keyring = Keyring(self.engine, master, "master-1")
        self.blobs = EncryptedBlobStore(open_blob_store(f"file://{blob_dir}"), self.keyring)
        self.clock = FixedClock(T0)
        self.notes: list[tuple[str, str]] = []

        async def notify(t: str, o: str, what: str, entries: list) -> None:
            self.notes.append((o, what))

        self.retention = Retention(
            self.engine, self.blobs, self.keyring, clock=self.clock, notify=notify
        )

    async def seed_order(self, tenant: str, order: str) -> dict[str, list[str]]:
        """Photos, an adapter, checkpoints, candidates and a row in a service-owned table."""
        keys: dict[str, list[str]] = {}
        for kind, names, data in (
            ("photos", [f"p{i}.jpg" for i in range(8)], JPEG),
            ("adapter", ["lora.safetensors"], b"safetensors" + secrets.token_bytes(500)),
            ("checkpoints", ["step-100.safetensors"], secrets.token_bytes(300)),
            ("candidates", [f"r0-{i:05d}.png" for i in range(5)], PNG),
        ):
            keys[kind] = []
            for n in names:
                k = blob_key(tenant, order, kind, n)
                await self.blobs.put(k, data)
                keys[kind].append(k)
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO demo_owner.results (tenant_id, order_id, result_id, note)"
                    " VALUES (:t, :o, 'r0-00000', 'scores')"
                ),
                {"t": tenant, "o": order},
            )
        return keys

    async def exists(self, keys: list[str]) -> list[bool]:
        return [await self.blobs.inner.exists(k) for k in keys]


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Postgres:
    server = Postgres(tmp_path_factory.mktemp("pg-retention")).start()
    yield server
    server.stop()


@pytest.fixture
async def env(pg: Postgres, tmp_path: Path) -> AsyncIterator[Env]:
    await db.migrate(pg.url, "keyring")
    await db.migrate(pg.url, "retention")
    e = Env(pg.url, tmp_path / "blobs", secrets.token_bytes(32))
    async with e.engine.begin() as conn:
        # Stands for another service's order-scoped table (found by the `order_id` convention).
        await conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS demo_owner"))
        await conn.execute(
            sa.text(
                "CREATE TABLE IF NOT EXISTS demo_owner.results (tenant_id text, order_id text,"
                " result_id text, note text)"
            )
        )
    yield e
    await e.engine.dispose()


def order_id() -> str:
    return "o-" + secrets.token_hex(6)


async def test_photos_go_after_n_days_and_nothing_else(env: Env) -> None:
    o = order_id()
    keys = await env.seed_order("acme", o)
    await env.retention.on_lifecycle(
        "acme", o, "READY", T0, photo_retention_days=10, keep_model=True
    )

    env.clock.at = T0 + timedelta(days=9, hours=23)
    await env.retention.sweep_once()
    assert all(await env.exists(keys["photos"])), "photos deleted before their N days"

    env.clock.at = T0 + timedelta(days=10, minutes=1)
    report = await env.retention.sweep_once()
    assert report.deleted == {"PHOTOS": 1, "EMBEDDINGS": 1}
    assert not any(await env.exists(keys["photos"]))
    # Nothing else: the kept model, checkpoints and results are all still there and readable.
    for kind in ("adapter", "checkpoints", "candidates"):
        assert all(await env.exists(keys[kind])), kind
    assert (await env.blobs.get(keys["candidates"][0])) == PNG


async def test_adapter_goes_at_order_end_unless_kept_and_results_after_window(env: Env) -> None:
    dropped, kept = order_id(), order_id()
    keys_dropped = await env.seed_order("acme", dropped)
    keys_kept = await env.seed_order("acme", kept)
    await env.retention.on_lifecycle("acme", dropped, "READY", T0, 7, keep_model=False)
    await env.retention.on_lifecycle("acme", kept, "READY", T0, 7, keep_model=True)

    env.clock.at = T0 + timedelta(seconds=1)
    await env.retention.sweep_once()
    assert not any(await env.exists(keys_dropped["adapter"] + keys_dropped["checkpoints"]))
    assert all(await env.exists(keys_kept["adapter"] + keys_kept["checkpoints"]))
    assert all(await env.exists(keys_dropped["candidates"]))

    env.clock.at = T0 + timedelta(days=30, seconds=1)
    await env.retention.sweep_once()
    assert not any(await env.exists(keys_dropped["candidates"]))
    assert all(await env.exists(keys_kept["adapter"])), "a kept model outlives the results window"
    assert (dropped, "RESULTS") in env.notes

    # Everything of `dropped` is gone, so its key is destroyed too (and recorded).
    async with env.engine.connect() as conn:
        classes = {
            r.data_class: r
            for r in await conn.execute(sa.select(ledger).where(ledger.c.order_id == dropped))
        }
    assert set(classes) == {"PHOTOS", "EMBEDDINGS", "ADAPTER", "RESULTS", "DATA_KEY"}
    assert classes["PHOTOS"].object_count == 8
    assert classes["RESULTS"].object_count == 5
    assert classes["DATA_KEY"].key_id_hash
    with pytest.raises(KeyDestroyed):
        await env.keyring.get("acme", dropped)


async def test_replayed_lifecycle_event_schedules_once(env: Env) -> None:
    o = order_id()
    first = await env.retention.on_lifecycle("acme", o, "READY", T0, 7, False)
    again = await env.retention.on_lifecycle("acme", o, "READY", T0 + timedelta(hours=1), 7, False)
    assert (first, again) == (4, 0)
    assert await env.retention.on_lifecycle("acme", order_id(), "TRAINING", T0, 7, False) == 0


async def test_erasure_leaves_only_ledger_and_key_copied_aside_is_useless(env: Env) -> None:
    o = order_id()
    keys = await env.seed_order("acme", o)
    other = order_id()
    other_keys = await env.seed_order("acme", other)
    await env.retention.on_lifecycle("acme", o, "READY", T0, 7, False)
    photo = keys["photos"][0]
    aside = env.blob_dir.parent / "aside.bin"
    stored = next(env.blob_dir.rglob(photo.rsplit("/", 1)[1]))
    shutil.copy(stored, aside)

    t0 = time.perf_counter()
    receipt = await env.retention.erase("acme", o, request_id="req-1", reason="user asked")
    assert time.perf_counter() - t0 < 5

    assert not [p for p in env.blob_dir.rglob("*") if p.is_file() and o in str(p)]
    async with env.engine.connect() as conn:
        assert await scan_for_order(conn, o) == []
    by_class = {e.data_class: e for e in receipt.entries}
    assert (
        by_class["PHOTOS"].object_count == 8 and by_class["ADAPTER"].object_count == 2
    )  # adapter + checkpoint
    assert by_class["RESULTS"].object_count == 5 and by_class["ROWS"].object_count >= 1
    assert by_class["DATA_KEY"].key_id_hash and by_class["DATA_KEY"].trigger == "request:req-1"

    # The copy made before erasure cannot be decrypted: the key is gone, everywhere.
    stored.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(aside, stored)
    with pytest.raises(KeyDestroyed):
        await env.blobs.get(photo)
    with pytest.raises(KeyDestroyed):
        await env.blobs.put(blob_key("acme", o, "adapter", "late.safetensors"), b"late")
    # A retried erasure returns the same receipt and writes no second set of ledger entries.
    again = await env.retention.erase("acme", o, request_id="req-1")
    assert again.receipt_id == receipt.receipt_id
    assert len(again.entries) == len(receipt.entries)
    # The other order is untouched.
    assert all(await env.exists(other_keys["photos"]))
    assert await env.blobs.get(other_keys["photos"][0]) == JPEG


async def test_blobs_at_rest_are_ciphertext(env: Env) -> None:
    o = order_id()
    await env.seed_order("acme", o)
    files = [p for p in env.blob_dir.rglob("*") if p.is_file() and o in str(p)]
    assert len(files) == 15
    for f in files:
        head = f.read_bytes()[:8]
        assert not head.startswith(b"\xff\xd8\xff"), f
        assert not head.startswith(b"\x89PNG"), f


async def test_kill_mid_sweep_then_resume_deletes_everything_once(env: Env, tmp_path: Path) -> None:
    orders = [order_id() for _ in range(3)]
    for o in orders:
        await env.seed_order("acme", o)
        await env.retention.on_lifecycle("acme", o, "FAILED", T0, 1, False)
    at = (T0 + timedelta(days=31)).isoformat()
    base_env = {
        **os.environ,
        "DATABASE_URL": env.url,
        "HS_BLOB_URL": f"file://{env.blob_dir}",
        "HS_MASTER_KEY": base64.b64encode(env.master).decode(),
        "HS_LOG_FORMAT": "text",
    }
    slow = subprocess.Popen(  # noqa: ASYNC220 - the test kills it; nothing else runs
        [sys.executable, "-m", "services.retention.sweep", "--at", at],
        cwd=ROOT,
        env={**base_env, "HS_RETENTION_DEBUG_STEP_DELAY_S": "0.3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Kill -9 once some (not all) deletions are recorded.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with env.engine.connect() as conn:
            done = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(schedule)
                    .where(schedule.c.order_id.in_(orders), schedule.c.status == "done")
                )
            ).scalar_one()
        if done >= 2:
            break
        await asyncio.sleep(0.05)
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    assert 2 <= done < 12, f"kill came too late or never ({done} done)"

    result = subprocess.run(  # noqa: ASYNC221 - the resumed sweep must finish first
        [sys.executable, "-m", "services.retention.sweep", "--at", at],
        cwd=ROOT,
        env=base_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout.strip().splitlines()[-1])

    async with env.engine.connect() as conn:
        rows = list(await conn.execute(sa.select(ledger).where(ledger.c.order_id.in_(orders))))
        pending = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(schedule)
                .where(schedule.c.order_id.in_(orders), schedule.c.status != "done")
            )
        ).scalar_one()
    assert pending == 0
    per_class = [(r.order_id, r.data_class) for r in rows]
    assert len(per_class) == len(set(per_class)), "duplicate ledger entries"
    assert len(per_class) == 3 * 5  # 4 classes + the data key, per order
    photos = [r for r in rows if r.data_class == "PHOTOS"]
    assert all(r.object_count == 8 for r in photos), "a resumed sweep must report what was there"
    assert not [
        p for p in env.blob_dir.rglob("*") if p.is_file() and any(o in str(p) for o in orders)
    ]
