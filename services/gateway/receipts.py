"""Deletion receipts, kept after the order is erased so a retry gets the same receipt.

DeleteOrder's request is its order name; `order_key` (sha256 of that name) is both how a
receipt is found for an erased order and the request hash a reused request_id is checked
against.
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from headshots.v1 import headshots_pb2 as pb
from services.gateway.tables import deletion_receipts as table
from services.policy import names


def order_key(order_name: str) -> str:
    return hashlib.sha256(order_name.encode()).hexdigest()


def _receipt(row: Any) -> pb.DeletionReceipt:
    return pb.DeletionReceipt.FromString(bytes(row.receipt))


async def by_request(conn: AsyncConnection, tenant_id: str, request_id: str) -> Any | None:
    """The stored row for this request id (its `order_key` tells which order it erased)."""
    return (
        await conn.execute(
            sa.select(table).where(table.c.tenant_id == tenant_id, table.c.request_id == request_id)
        )
    ).one_or_none()


async def by_order(
    conn: AsyncConnection, tenant_id: str, order_name: str
) -> pb.DeletionReceipt | None:
    row = (
        await conn.execute(
            sa.select(table)
            .where(table.c.tenant_id == tenant_id, table.c.order_key == order_key(order_name))
            .order_by(table.c.created_at)
            .limit(1)
        )
    ).one_or_none()
    return None if row is None else _receipt(row)


async def by_id(
    conn: AsyncConnection, tenant_id: str, receipt_id: str
) -> pb.DeletionReceipt | None:
    row = (
        await conn.execute(
            sa.select(table).where(table.c.tenant_id == tenant_id, table.c.receipt_id == receipt_id)
        )
    ).one_or_none()
    return None if row is None else _receipt(row)


async def keep(
    conn: AsyncConnection, tenant_id: str, request_id: str, receipt: pb.DeletionReceipt
) -> pb.DeletionReceipt:
    """Store `receipt` under its name; a concurrent twin's stored receipt wins."""
    named = pb.DeletionReceipt()
    named.CopyFrom(receipt)
    named.name = names.receipt_name(tenant_id, receipt.receipt_id)
    await conn.execute(
        insert(table)
        .values(
            receipt_id=receipt.receipt_id,
            tenant_id=tenant_id,
            request_id=request_id or None,
            order_key=order_key(receipt.order),
            receipt=named.SerializeToString(),
        )
        .on_conflict_do_nothing()
    )
    if request_id:
        row = await by_request(conn, tenant_id, request_id)
        if row is not None:
            return _receipt(row)
    return named
