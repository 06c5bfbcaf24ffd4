"""The jobs an order sends to the workers: one builder each, used by every path that sends
them (SubmitOrder, the orchestrator's rounds, the reconciler's re-queue), so a re-queued job
is the job that was first sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from headshots.v1 import jobs_pb2
from services.common.bus import ids
from services.gateway.mappers import embedding_list
from services.gateway.orders import seed_base
from services.gateway.tables import photos
from services.policy.styles import platform_catalogue


async def usable_photo_keys(conn: AsyncConnection, order_id: str) -> list[str]:
    """Blob keys of the order's usable photos, in upload order."""
    rows = await conn.execute(
        sa.select(photos.c.blob_key)
        .where(photos.c.order_id == order_id, photos.c.usable)
        .order_by(photos.c.created_at, photos.c.photo_id)
    )
    return list(rows.scalars())


def train_job(
    row: Any, photo_keys: Sequence[str], reference_embedding: Sequence[float] | None = None
) -> jobs_pb2.TrainJob:
    """The order's TrainJob; the reference embedding defaults to the one stored on `row`."""
    embedding = (
        list(reference_embedding)
        if reference_embedding is not None
        else embedding_list(row.reference_embedding)
    )
    return jobs_pb2.TrainJob(
        job_id=ids.train_job_id(row.order_id),
        tenant_id=row.tenant_id,
        order_id=row.order_id,
        photo_keys=list(photo_keys),
        subject_class=row.subject_class,
        reference_embedding=embedding,
    )


def generate_job(
    row: Any,
    round_: int,
    count: int,
    final: bool,
    adapter_key: str | None = None,
    instance_prompt: str | None = None,
) -> jobs_pb2.GenerateJob:
    """Round `round_` of the order; adapter and prompt default to the ones stored on `row`."""
    return jobs_pb2.GenerateJob(
        job_id=ids.generate_job_id(row.order_id, round_),
        tenant_id=row.tenant_id,
        order_id=row.order_id,
        adapter_key=adapter_key if adapter_key is not None else row.adapter_key,
        instance_prompt=instance_prompt if instance_prompt is not None else row.instance_prompt,
        style_ids=list(row.style_ids) or sorted(platform_catalogue().ids()),
        custom_prompt=row.custom_prompt,
        count=count,
        round=round_,
        seed_base=seed_base(row.order_id, round_),
        reference_embedding=embedding_list(row.reference_embedding),
        result_count=row.result_count,
        final_round=final,
    )
