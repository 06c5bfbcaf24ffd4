"""HeadshotService's result methods: list (with the rejection summary) and download."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import sqlalchemy as sa

from headshots.v1 import headshots_pb2 as pb
from services.common.grpc.errors import ApiError, not_found
from services.common.storage.base import BlobNotFound, order_prefix
from services.gateway.deps import TenantApi
from services.gateway.mappers import result_proto
from services.gateway.paging import offset_of, page_size, token_of
from services.gateway.result_summary import rejection_summary
from services.gateway.tables import results
from services.gateway.validation import ids_of
from services.policy import names

DOWNLOAD_CHUNK = 1024 * 1024


class ResultsApi(TenantApi):
    async def ListResults(
        self, request: pb.ListResultsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListResultsResponse:
        tenant_id = await self._caller(context)
        row = await self._order(tenant_id, request.parent, field="parent")
        size = page_size(request.page_size)
        scope = f"{request.parent}|{int(request.include_rejected)}"
        offset = offset_of(request.page_token, scope)
        q = sa.select(results).where(results.c.order_id == row.order_id)
        if not request.include_rejected:
            q = q.where(results.c.delivered)
        q = q.order_by(
            results.c.delivered.desc(),
            results.c.rank,
            sa.func.cardinality(results.c.rejection_reasons),
            results.c.result_id,
        )
        async with self.d.engine.connect() as conn:
            rows = list(await conn.execute(q.offset(offset).limit(size + 1)))
            summary = await rejection_summary(conn, row.order_id)
        resp = pb.ListResultsResponse(
            results=[result_proto(r) for r in rows[:size]], summary=summary
        )
        if len(rows) > size:
            resp.next_page_token = token_of(offset + size, scope)
        return resp

    async def DownloadResult(
        self, request: pb.DownloadResultRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadResultResponse]:
        tenant_id = await self._caller(context)
        t, o, r = ids_of(request.name, names.RESULT_RE, "result", "name")
        if t != tenant_id:
            raise not_found("result")
        async with self.d.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(results).where(
                        results.c.order_id == o,
                        results.c.result_id == r,
                        results.c.tenant_id == tenant_id,
                    )
                )
            ).one_or_none()
        if row is None or not row.blob_key.startswith(order_prefix(tenant_id, o)):
            raise not_found("result")
        try:
            data = await self.d.blobs.get(row.blob_key)
        except BlobNotFound as err:
            raise ApiError(
                grpc.StatusCode.NOT_FOUND, "the result's image has been deleted"
            ) from err
        for start in range(0, max(1, len(data)), DOWNLOAD_CHUNK):
            chunk = pb.DownloadResultResponse(data=data[start : start + DOWNLOAD_CHUNK])
            if start == 0:
                chunk.content_type = row.content_type or "image/png"
                chunk.total_size = len(data)
            yield chunk
