"""HeadshotService's preview and style methods: a few images from one photo, the catalogue."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import grpc

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import internal_pb2
from services.common.grpc.errors import ApiError
from services.common.grpc.server import outgoing_timeout
from services.gateway.deps import TenantApi
from services.gateway.paging import offset_of, page_size, token_of
from services.gateway.uploads import Refusal, clean
from services.gateway.validation import check_preview
from services.policy.styles import platform_catalogue

log = logging.getLogger(__name__)
STYLES: tuple[pb.Style, ...] = tuple(s.to_pb() for s in platform_catalogue().styles)


class PreviewsApi(TenantApi):
    async def CreatePreview(
        self, request: pb.CreatePreviewRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePreviewResponse:
        tenant_id = await self._caller(context)
        self._parent_tenant(tenant_id, request.parent)
        check_preview(request)
        try:
            photo = await asyncio.to_thread(clean, request.photo, self.d.limits)
        except Refusal as refusal:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the photo was refused: {refusal.message}",
                [("photo", f"{refusal.code}: {refusal.message}")],
            ) from refusal
        seed = int.from_bytes(secrets.token_bytes(4), "big")
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
            raise ApiError(code, f"the preview could not be made: {err.details()}") from err
        resp = pb.CreatePreviewResponse(images=list(reply.images), model_id=reply.model_id)
        resp.latency.FromNanoseconds(int((time.perf_counter() - t0) * 1e9))
        return resp

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
