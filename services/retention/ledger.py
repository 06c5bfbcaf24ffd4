"""Ledger entries: what was deleted, when, why — no personal data, kept after the order."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from headshots.v1 import headshots_pb2
from services.retention.tables import ledger


async def record(
    conn: AsyncConnection,
    *,
    tenant_id: str,
    order_id: str,
    data_class: str,
    objects: int,
    nbytes: int,
    at: datetime,
    trigger: str,
    source: str,
    key_id_hash: str | None = None,
) -> None:
    """Insert once per `source`; a resumed sweep or retried erasure is a no-op here."""
    stmt = (
        insert(ledger)
        .values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            order_id=order_id,
            data_class=data_class,
            object_count=objects,
            byte_count=nbytes,
            deleted_at=at,
            trigger=trigger,
            key_id_hash=key_id_hash,
            source=source,
        )
        .on_conflict_do_nothing(index_elements=["source"])
    )
    await conn.execute(stmt)


async def entries(conn: AsyncConnection, tenant_id: str, order_id: str) -> list[sa.Row]:
    rows = await conn.execute(
        sa.select(ledger)
        .where(ledger.c.tenant_id == tenant_id, ledger.c.order_id == order_id)
        .order_by(ledger.c.deleted_at, ledger.c.data_class)
    )
    return list(rows)


def to_proto(rows: Sequence[sa.Row]) -> list[headshots_pb2.LedgerEntry]:
    out = []
    for r in rows:
        ts = Timestamp()
        ts.FromDatetime(r.deleted_at)
        out.append(
            headshots_pb2.LedgerEntry(
                id=str(r.id),
                data_class=r.data_class,
                object_count=r.object_count,
                byte_count=r.byte_count,
                delete_time=ts,
                trigger=r.trigger,
                key_id_hash=r.key_id_hash or "",
            )
        )
    return out
