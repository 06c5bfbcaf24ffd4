"""An order's photos in PostgreSQL and the blob store: the SQL of the upload pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from headshots.v1 import internal_pb2
from services.common.storage.base import blob_key
from services.gateway.mappers import finding_dicts
from services.gateway.tables import photos


@dataclass(frozen=True)
class Spilled:
    """A cleaned photo already in the blob store (under `photo_key`), by what its row needs:
    its bytes are no longer held."""

    width: int
    height: int
    size_bytes: int
    sha256: str


def photo_key(tenant_id: str, order_id: str, photo_id: str) -> str:
    return blob_key(tenant_id, order_id, "photos", f"{photo_id}.jpg")


async def stored_photos(engine: AsyncEngine, order_id: str) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            await conn.execute(
                sa.select(photos)
                .where(photos.c.order_id == order_id)
                .order_by(photos.c.created_at, photos.c.photo_id)
            )
        )


async def insert_photo(
    conn: AsyncConnection,
    tenant_id: str,
    order_id: str,
    photo_id: str,
    filename: str,
    photo: Spilled,
    verdict: internal_pb2.SelfieAnalysis,
    facts: internal_pb2.SelfieFacts,
) -> None:
    await conn.execute(
        sa.insert(photos).values(
            order_id=order_id,
            photo_id=photo_id,
            tenant_id=tenant_id,
            filename=filename,
            blob_key=photo_key(tenant_id, order_id, photo_id),
            usable=True,
            findings=finding_dicts(verdict.findings),
            width=photo.width,
            height=photo.height,
            size_bytes=photo.size_bytes,
            sha256=photo.sha256,
            sharpness=verdict.sharpness,
            face_size_px=verdict.face_size_px,
            identity_distance=verdict.identity_distance,
            selfie_facts=facts.SerializeToString(),
        )
    )


async def update_verdict(
    conn: AsyncConnection,
    order_id: str,
    verdict: internal_pb2.SelfieAnalysis,
    facts: internal_pb2.SelfieFacts | None = None,
) -> None:
    """A stored photo's verdict as part of the set it is now in (and its facts, when they
    were measured only now)."""
    values: dict[str, Any] = {
        "usable": verdict.usable,
        "findings": finding_dicts(verdict.findings),
        "identity_distance": verdict.identity_distance,
    }
    if facts is not None:
        values["selfie_facts"] = facts.SerializeToString()
    await conn.execute(
        sa.update(photos)
        .where(photos.c.order_id == order_id, photos.c.photo_id == verdict.photo_id)
        .values(**values)
    )


async def store_facts(
    conn: AsyncConnection, order_id: str, measured: dict[str, internal_pb2.SelfieFacts]
) -> None:
    """Facts measured now for photos stored without them."""
    for photo_id, facts in measured.items():
        await conn.execute(
            sa.update(photos)
            .where(photos.c.order_id == order_id, photos.c.photo_id == photo_id)
            .values(selfie_facts=facts.SerializeToString())
        )


async def usable_count(conn: AsyncConnection, order_id: str) -> int:
    return int(
        (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(photos)
                .where(photos.c.order_id == order_id, photos.c.usable)
            )
        ).scalar_one()
    )


async def photos_by_id(conn: AsyncConnection, order_id: str, photo_ids: list[str]) -> list[Any]:
    return list(
        await conn.execute(
            sa.select(photos).where(photos.c.order_id == order_id, photos.c.photo_id.in_(photo_ids))
        )
    )


async def photo(conn: AsyncConnection, order_id: str, photo_id: str) -> Any | None:
    return (
        await conn.execute(
            sa.select(photos).where(photos.c.order_id == order_id, photos.c.photo_id == photo_id)
        )
    ).one_or_none()


async def delete_photo(conn: AsyncConnection, order_id: str, photo_id: str) -> None:
    await conn.execute(
        sa.delete(photos).where(photos.c.order_id == order_id, photos.c.photo_id == photo_id)
    )


async def page(engine: AsyncEngine, order_id: str, offset: int, size: int) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            await conn.execute(
                sa.select(photos)
                .where(photos.c.order_id == order_id)
                .order_by(photos.c.created_at, photos.c.photo_id)
                .offset(offset)
                .limit(size)
            )
        )


async def forget_facts(conn: AsyncConnection, order_id: str) -> None:
    """Drop the order's photo facts (face descriptors, near-copy signatures): biometric data,
    deleted by the retention policy together with the photos they came from."""
    await conn.execute(
        sa.update(photos)
        .where(photos.c.order_id == order_id, photos.c.selfie_facts.is_not(None))
        .values(selfie_facts=None)
    )
