"""Retention: schedule deletions from lifecycle facts, sweep what is due, erase on request.

Every deletion writes a ledger entry keyed by what caused it (`source`), so a crash at any
point followed by a re-run repeats nothing harmful: blob deletion is idempotent, and the
counts a ledger entry reports are planned (inventoried and committed) before anything is
deleted, so a resumed sweep reports what was really there.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from headshots.v1 import headshots_pb2, internal_pb2
from services.common import metrics
from services.common.storage.base import BlobStore, order_prefix
from services.policy.retention import END_STATES, Schedule, load
from services.retention import ledger
from services.retention.clock import Clock, SystemClock
from services.retention.order_rows import delete_order_rows
from services.retention.tables import erasures, schedule

log = logging.getLogger(__name__)

# Called after a deletion so owners and the gateway can react (order EXPIRED, jobs abandoned).
Notify = Callable[[str, str, str, list[headshots_pb2.LedgerEntry]], Awaitable[None]]


class KeyringLike:
    """What retention needs from services.common.keys.keyring.Keyring."""

    async def destroy(self, tenant_id: str, order_id: str) -> str:  # pragma: no cover
        raise NotImplementedError


@dataclass
class SweepReport:
    deleted: dict[str, int]
    keys_destroyed: int


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


def key_hash_of_missing(tenant_id: str, order_id: str) -> str:
    # An order that never stored a blob has no key; the receipt still names something
    # checkable, derived from the order, not a random value.
    return "no-key:" + hashlib.sha256(f"{tenant_id}/{order_id}".encode()).hexdigest()[:16]


class Retention:
    def __init__(
        self,
        engine: AsyncEngine,
        blobs: BlobStore,
        keyring: KeyringLike,
        *,
        clock: Clock | None = None,
        policies: Schedule | None = None,
        notify: Notify | None = None,
        step_delay_s: float = 0.0,
    ) -> None:
        self.engine = engine
        self.blobs = blobs
        self.keyring = keyring
        self.clock = clock or SystemClock()
        self.policies = policies or load()
        self.notify = notify
        self.step_delay_s = step_delay_s

    # ---- scheduling -------------------------------------------------------------------

    async def on_lifecycle(
        self,
        tenant_id: str,
        order_id: str,
        state: str,
        at: datetime,
        photo_retention_days: int,
        keep_model: bool,
    ) -> int:
        """Schedule the order's deletions when it ends; returns rows newly scheduled."""
        if state not in END_STATES:
            return 0
        due = self.policies.due_times(at, photo_retention_days, keep_model)
        rows = [
            {
                "tenant_id": tenant_id,
                "order_id": order_id,
                "data_class": cls,
                "policy": f"{cls.lower()}{'-kept' if cls == 'ADAPTER' and keep_model else ''}",
                "due_at": when,
                "status": "pending",
            }
            for cls, when in due.items()
        ]
        async with self.engine.begin() as conn:
            result = await conn.execute(
                insert(schedule)
                .values(rows)
                .on_conflict_do_nothing(constraint="schedule_once")
                .returning(schedule.c.id)
            )
            return len(result.fetchall())

    # ---- sweeping ---------------------------------------------------------------------

    async def sweep_once(self, limit: int = 100) -> SweepReport:
        """Delete everything due now. Safe to run in several processes and to crash anywhere."""
        now = self.clock.now()
        report = SweepReport(defaultdict(int), 0)
        async with self.engine.connect() as conn:
            due = (
                (
                    await conn.execute(
                        sa.select(schedule.c.id)
                        .where(schedule.c.status == "pending", schedule.c.due_at <= now)
                        .order_by(schedule.c.due_at, schedule.c.id)
                        .limit(limit)
                    )
                )
                .scalars()
                .all()
            )
        touched: set[tuple[str, str]] = set()
        for item_id in due:
            done = await self._sweep_item(item_id)
            if done is not None:
                tenant_id, order_id, cls = done
                report.deleted[cls] += 1
                touched.add((tenant_id, order_id))
        for tenant_id, order_id in sorted(touched):
            if await self._all_classes_done(tenant_id, order_id):
                await self._destroy_key_after_schedule(tenant_id, order_id)
                report.keys_destroyed += 1
        return report

    async def _sweep_item(self, item_id: int) -> tuple[str, str, str] | None:
        # Step 1: claim and plan (inventory committed before anything is deleted).
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(schedule)
                    .where(schedule.c.id == item_id, schedule.c.status == "pending")
                    .with_for_update(skip_locked=True)
                )
            ).first()
            if row is None:
                return None
            kinds = self.policies.policies[row.data_class].blob_kinds
            if row.planned_objects is None:
                objects, nbytes = await self._inventory(row.tenant_id, row.order_id, kinds)
                await conn.execute(
                    sa.update(schedule)
                    .where(schedule.c.id == item_id)
                    .values(planned_objects=objects, planned_bytes=nbytes)
                )
            else:
                objects, nbytes = row.planned_objects, row.planned_bytes
        await self._pause()
        # Step 2: delete (idempotent).
        for kind in kinds:
            await self.blobs.delete_prefix(f"{order_prefix(row.tenant_id, row.order_id)}{kind}/")
        await self._pause()
        # Step 3: ledger + done, together.
        now = self.clock.now()
        async with self.engine.begin() as conn:
            await ledger.record(
                conn,
                tenant_id=row.tenant_id,
                order_id=row.order_id,
                data_class=row.data_class,
                objects=int(objects or 0),
                nbytes=int(nbytes or 0),
                at=now,
                trigger=f"policy:{row.policy}",
                source=f"schedule:{item_id}",
            )
            await conn.execute(
                sa.update(schedule)
                .where(schedule.c.id == item_id)
                .values(status="done", done_at=now)
            )
            entries = await ledger.entries(conn, row.tenant_id, row.order_id)
        metrics.DELETIONS.labels(row.data_class, "policy").inc(int(objects or 0))
        log.info(
            "deleted by policy",
            extra={"fields": {"order": row.order_id, "class": row.data_class, "objects": objects}},
        )
        if self.notify is not None:
            mine = [e for e in ledger.to_proto(entries) if e.data_class == row.data_class]
            await self.notify(row.tenant_id, row.order_id, row.data_class, mine)
        return row.tenant_id, row.order_id, row.data_class

    async def _all_classes_done(self, tenant_id: str, order_id: str) -> bool:
        async with self.engine.connect() as conn:
            pending = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(schedule)
                    .where(
                        schedule.c.tenant_id == tenant_id,
                        schedule.c.order_id == order_id,
                        schedule.c.status != "done",
                    )
                )
            ).scalar_one()
        return pending == 0

    async def _destroy_key_after_schedule(self, tenant_id: str, order_id: str) -> None:
        key_hash = await self._destroy_key(tenant_id, order_id)
        async with self.engine.begin() as conn:
            await ledger.record(
                conn,
                tenant_id=tenant_id,
                order_id=order_id,
                data_class="DATA_KEY",
                objects=1,
                nbytes=0,
                at=self.clock.now(),
                trigger="policy:data_key",
                source=f"schedule:{tenant_id}/{order_id}:DATA_KEY",
                key_id_hash=key_hash,
            )

    async def _destroy_key(self, tenant_id: str, order_id: str) -> str:
        try:
            return await self.keyring.destroy(tenant_id, order_id)
        except LookupError:
            return key_hash_of_missing(tenant_id, order_id)

    async def _inventory(
        self, tenant_id: str, order_id: str, kinds: tuple[str, ...]
    ) -> tuple[int, int]:
        objects = nbytes = 0
        for kind in kinds:
            for info in await self.blobs.list(f"{order_prefix(tenant_id, order_id)}{kind}/"):
                objects += 1
                nbytes += info.size
        return objects, nbytes

    async def _pause(self) -> None:
        if self.step_delay_s:
            await asyncio.sleep(self.step_delay_s)

    # ---- erasure ----------------------------------------------------------------------

    async def erase(
        self, tenant_id: str, order_id: str, request_id: str = "", reason: str = ""
    ) -> headshots_pb2.DeletionReceipt:
        """Erase everything of the order now: key first, then blobs, then rows."""
        t0 = time.perf_counter()
        request_id = request_id or f"erase:{tenant_id}/{order_id}"
        now = self.clock.now()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(erasures)
                .values(
                    request_id=request_id,
                    tenant_id=tenant_id,
                    order_id=order_id,
                    receipt_id=uuid.uuid4(),
                    status="running",
                    requested_at=now,
                )
                .on_conflict_do_nothing(index_elements=["request_id"])
            )
            req = (
                await conn.execute(sa.select(erasures).where(erasures.c.request_id == request_id))
            ).one()
        if (req.tenant_id, req.order_id) != (tenant_id, order_id):
            raise ValueError("request_id was already used for another order")
        source = f"erase:{tenant_id}/{order_id}"
        trigger = f"request:{request_id}"

        # 1. Crypto-shredding: from here on, every copy of every blob is unreadable.
        key_hash = await self._destroy_key(tenant_id, order_id)
        async with self.engine.begin() as conn:
            await ledger.record(
                conn,
                tenant_id=tenant_id,
                order_id=order_id,
                data_class="DATA_KEY",
                objects=1,
                nbytes=0,
                at=self.clock.now(),
                trigger=trigger,
                source=f"{source}:DATA_KEY",
                key_id_hash=key_hash,
            )
        # 2. Tell running jobs to stop (they would fail on the destroyed key anyway).
        if self.notify is not None:
            await self.notify(tenant_id, order_id, "ERASED", [])
        # 3. Blobs, counted by data class.
        by_class: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        kind_class = {
            kind: cls for cls, p in self.policies.policies.items() for kind in p.blob_kinds
        }
        prefix = order_prefix(tenant_id, order_id)
        for info in await self.blobs.list(prefix):
            kind = info.key[len(prefix) :].split("/", 1)[0]
            counts = by_class[kind_class.get(kind, "OTHER")]
            counts[0] += 1
            counts[1] += info.size
        await self.blobs.delete_prefix(prefix)
        # 4. Rows in every schema, then the ledger and the request, in one transaction.
        async with self.engine.begin() as conn:
            rows = await delete_order_rows(conn, tenant_id, order_id)
            at = self.clock.now()
            for cls, (objects, nbytes) in sorted(by_class.items()):
                await ledger.record(
                    conn,
                    tenant_id=tenant_id,
                    order_id=order_id,
                    data_class=cls,
                    objects=objects,
                    nbytes=nbytes,
                    at=at,
                    trigger=trigger,
                    source=f"{source}:{cls}",
                    key_id_hash=key_hash,
                )
            await ledger.record(
                conn,
                tenant_id=tenant_id,
                order_id=order_id,
                data_class="ROWS",
                objects=rows,
                nbytes=0,
                at=at,
                trigger=trigger,
                source=f"{source}:ROWS",
                key_id_hash=key_hash,
            )
            await conn.execute(
                sa.update(erasures)
                .where(erasures.c.request_id == request_id)
                .values(status="done", completed_at=at)
            )
            entries = await ledger.entries(conn, tenant_id, order_id)
        for cls, (objects, _) in by_class.items():
            metrics.DELETIONS.labels(cls, "request").inc(objects)
        log.info(
            "erased",
            extra={"fields": {"order": order_id, "ms": round((time.perf_counter() - t0) * 1e3)}},
        )
        receipt = headshots_pb2.DeletionReceipt(
            receipt_id=str(req.receipt_id),
            order=f"tenants/{tenant_id}/orders/{order_id}",
            entries=ledger.to_proto(entries),
            complete_time=_ts(at),
        )
        return receipt

    # ---- status -----------------------------------------------------------------------

    async def status(self, tenant_id: str, order_id: str) -> internal_pb2.StatusResponse:
        resp = internal_pb2.StatusResponse()
        for p in self.policies.policies.values():
            rp = resp.policies.add(
                data_class=p.data_class, description=p.description, starts_at=p.starts_at
            )
            if p.default_days is not None:
                rp.default_after.FromSeconds(p.default_days * 86400)
            max_days = p.max_days if p.max_days is not None else p.kept_max_days
            if max_days is not None:
                rp.max_after.FromSeconds(max_days * 86400)
        if not order_id:
            return resp
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(schedule)
                .where(schedule.c.tenant_id == tenant_id, schedule.c.order_id == order_id)
                .order_by(schedule.c.due_at)
            )
            for r in rows:
                resp.scheduled.add(
                    data_class=r.data_class,
                    due_time=_ts(r.due_at),
                    policy=r.policy,
                    done=r.status == "done",
                )
            resp.ledger.extend(ledger.to_proto(await ledger.entries(conn, tenant_id, order_id)))
        return resp
