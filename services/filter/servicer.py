"""FilterService.AnalyzeSelfies: the face stack's verdict on a set of selfies, at upload.

Photos come as images (analysed now) or as the facts an earlier call returned for them, so
a set that grows by one photo costs one photo's analysis."""

from __future__ import annotations

import asyncio
import time

import grpc

from headshots.v1 import internal_pb2, internal_pb2_grpc
from services.common import metrics
from services.common.grpc.errors import ApiError
from services.filter.analysis import FactsError

MAX_PHOTOS = 40
MAX_BYTES = 30 * 1024 * 1024


class FilterServicer(internal_pb2_grpc.FilterServiceServicer):
    def __init__(self, analyzer: object | None = None) -> None:
        # services.filter.analysis.SelfieAnalyzer: .analyze_inputs(list[SelfieInput]) ->
        # response, raising FactsError for facts it cannot use.
        # None while the service loads its models (health is NOT_SERVING until then).
        self.analyzer = analyzer
        # ONNX sessions use every core they are given; one analysis at a time keeps latency flat.
        self._lock = asyncio.Lock()

    async def AnalyzeSelfies(
        self, request: internal_pb2.AnalyzeSelfiesRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb2.AnalyzeSelfiesResponse:
        if self.analyzer is None:
            raise ApiError(grpc.StatusCode.UNAVAILABLE, "the face models are still loading")
        if not request.photos:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "no photos to analyze",
                field_violations=[("photos", "at least one photo is required")],
            )
        if len(request.photos) > MAX_PHOTOS:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {MAX_PHOTOS} photos per call",
                field_violations=[("photos", f"{len(request.photos)} photos given")],
            )
        ids = [p.photo_id for p in request.photos]
        if len(set(ids)) != len(ids):
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "photo ids must be unique",
                field_violations=[("photos.photo_id", "duplicate ids")],
            )
        empty = [i for i, p in enumerate(request.photos) if p.WhichOneof("source") is None]
        if empty:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "each photo needs an image or its facts",
                field_violations=[(f"photos[{empty[0]}]", "neither image nor facts")],
            )
        total = sum(len(p.image) for p in request.photos)
        if total > MAX_BYTES:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "photos too large in total",
                field_violations=[("photos", f"{total} bytes, limit {MAX_BYTES}")],
            )
        async with self._lock:
            t0 = time.perf_counter()
            try:
                response = await asyncio.to_thread(
                    self.analyzer.analyze_inputs,  # type: ignore[attr-defined]
                    list(request.photos),
                )
            except FactsError as err:
                index = ids.index(err.photo_id)
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION
                    if err.stale
                    else grpc.StatusCode.INVALID_ARGUMENT,
                    "stale facts: send the image" if err.stale else "unusable facts",
                    field_violations=[(f"photos[{index}].facts", str(err))],
                    reason="STALE_FACTS" if err.stale else "BAD_FACTS",
                ) from err
            metrics.MODEL_SECONDS.labels("filter", "analyze_selfies").inc(time.perf_counter() - t0)
        metrics.IMAGES.labels("filter", "selfies").inc(
            sum(1 for p in request.photos if p.WhichOneof("source") == "image")
        )
        return response
