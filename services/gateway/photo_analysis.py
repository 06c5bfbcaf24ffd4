"""The filter's verdict on an order's selfies (FilterService.AnalyzeSelfies)."""

from __future__ import annotations

import logging

import grpc

from headshots.v1 import internal_pb2, internal_pb2_grpc
from services.common.grpc.errors import ApiError
from services.common.grpc.server import outgoing_timeout

log = logging.getLogger(__name__)


async def analyze(
    stub: internal_pb2_grpc.FilterServiceStub, items: list[tuple[str, bytes]], timeout_s: float
) -> internal_pb2.AnalyzeSelfiesResponse:
    request = internal_pb2.AnalyzeSelfiesRequest(
        photos=[internal_pb2.SelfieInput(photo_id=pid, image=data) for pid, data in items]
    )
    try:
        return await stub.AnalyzeSelfies(request, timeout=outgoing_timeout(timeout_s))
    except grpc.aio.AioRpcError as err:
        log.warning("AnalyzeSelfies failed: %s %s", err.code(), err.details())
        raise ApiError(
            grpc.StatusCode.UNAVAILABLE,
            "the photo check is unavailable right now; nothing was stored, please retry",
            reason="FILTER_UNAVAILABLE",
            retry_after_s=5.0,
        ) from err
