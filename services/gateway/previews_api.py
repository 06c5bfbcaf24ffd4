"""HeadshotService's preview and style methods: a few images from one photo, the catalogue."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time

import grpc
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import internal_pb2
from services.common.grpc.errors import ApiError, clip
from services.common.grpc.server import outgoing_timeout
from services.gateway.deps import TenantApi
from services.gateway.paging import offset_of, page_size, token_of
from services.gateway.photo_analysis import describe
from services.gateway.tables import preview_requests
from services.gateway.uploads import CleanPhoto, Refusal, clean
from services.gateway.validation import check_preview, check_request_id, request_hash, reused
from services.policy.limits import limits
from services.policy.styles import platform_catalogue

log = logging.getLogger(__name__)
STYLES: tuple[pb.Style, ...] = tuple(s.to_pb() for s in platform_catalogue().styles)


class PreviewsApi(TenantApi):
    async def CreatePreview(
        self, request: pb.CreatePreviewRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePreviewResponse:
        tenant_id = await self._caller(context)
        self._parent_tenant(tenant_id, request.parent)
        check_request_id(request.request_id)
        check_preview(request)
        seed = await self._seed_for(tenant_id, request)
        photo = await self._checked_photo(request.photo)
        t0 = time.perf_counter()
        try:
            reply = await self.d.generator.Preview(
                internal_pb2.PreviewRequest(
                    image=photo.data,
                    style_id=request.style_id,
                    count=request.count or 2,
                    seed=seed,
                    custom_prompt=request.custom_prompt,
                ),
                timeout=outgoing_timeout(self.s.preview_timeout_s),
            )
        except grpc.aio.AioRpcError as err:
            log.warning("Preview failed: %s %s", err.code(), err.details())
            code = (
                err.code()
                if err.code()
                in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
                else grpc.StatusCode.UNAVAILABLE
            )
            raise ApiError(
                code,
                f"the preview could not be made: {clip(err.details() or '', 200)}",
                reason="PREVIEW_FAILED",
            ) from err
        resp = pb.CreatePreviewResponse(images=list(reply.images), model_id=reply.model_id)
        resp.latency.FromNanoseconds(int((time.perf_counter() - t0) * 1e9))
        return resp

    async def _seed_for(self, tenant_id: str, request: pb.CreatePreviewRequest) -> int:
        """A fresh seed; with a request_id, the seed its first call drew (so a retry whose
        answer was lost gets the same images), or ALREADY_EXISTS if it asked for more."""
        fresh = int.from_bytes(secrets.token_bytes(4), "big")
        if not request.request_id:
            return fresh
        digest = request_hash(request)
        window = dt.timedelta(hours=limits().preview_replay_hours)
        table = preview_requests
        async with self.d.engine.begin() as conn:
            await conn.execute(sa.delete(table).where(table.c.created_at < sa.func.now() - window))
            await conn.execute(
                insert(table)
                .values(
                    tenant_id=tenant_id,
                    request_id=request.request_id,
                    request_hash=digest,
                    seed=fresh,
                )
                .on_conflict_do_nothing()
            )
            row = (
                await conn.execute(
                    sa.select(table.c.request_hash, table.c.seed).where(
                        table.c.tenant_id == tenant_id, table.c.request_id == request.request_id
                    )
                )
            ).one()
        if row.request_hash != digest:
            raise reused(request.request_id)
        return int(row.seed)

    async def _checked_photo(self, data: bytes) -> CleanPhoto:
        """The photo after the same checks UploadPhotos makes: decoding, then the selfie check."""
        try:
            photo = await asyncio.to_thread(clean, data, self.d.limits)
        except Refusal as refusal:
            raise self._refused(refusal) from refusal
        verdict = await describe(self.d.filter, "preview", photo.data, self.s.filter_timeout_s)
        if not verdict.usable:
            blocking = [f for f in verdict.findings if f.blocking]
            code = blocking[0].code if blocking else "REFUSED"
            text = "; ".join(f.message for f in blocking) or "the photo check refused it"
            raise self._refused(Refusal(code, text))
        return photo

    @staticmethod
    def _refused(refusal: Refusal) -> ApiError:
        return ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the photo was refused: {refusal.message}",
            [("photo", f"{refusal.code}: {refusal.message}")],
            reason="PHOTO_REFUSED",
            metadata={"code": refusal.code},
        )

    async def ListStyles(
        self, request: pb.ListStylesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStylesResponse:
        await self._caller(context)
        size = page_size(request.page_size)
        offset = offset_of(request.page_token, "styles")
        resp = pb.ListStylesResponse(styles=list(STYLES[offset : offset + size]))
        if offset + size < len(STYLES):
            resp.next_page_token = token_of(offset + size, "styles")
        return resp
