"""`headshots.v1.GeneratorService`: Preview over gRPC (the gateway calls it)."""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf.duration_pb2 import Duration

from headshots.v1 import headshots_pb2, internal_pb2, internal_pb2_grpc
from services.common.grpc import errors
from services.generator.preview import Previewer, PreviewRefused

log = logging.getLogger(__name__)
SERVICE_NAME = "headshots.v1.GeneratorService"


class GeneratorServicer(internal_pb2_grpc.GeneratorServiceServicer):
    def __init__(self, previewer: Previewer | None = None) -> None:
        # Set once the base model is loaded (the port opens before that, NOT_SERVING).
        self.previewer = previewer

    async def Preview(
        self, request: internal_pb2.PreviewRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb2.PreviewResponse:
        if self.previewer is None:
            await errors.abort(
                context,
                errors.ApiError(grpc.StatusCode.UNAVAILABLE, "generator is loading its model"),
            )
            raise AssertionError("unreachable")
        try:
            result = await asyncio.to_thread(
                self.previewer.preview,
                request.image,
                request.style_id,
                request.count,
                request.seed,
                request.custom_prompt,
            )
        except PreviewRefused as err:
            await errors.abort(context, errors.invalid(str(err), (err.field, str(err))))
            raise AssertionError("unreachable") from err
        latency = Duration()
        latency.FromNanoseconds(int(result.seconds * 1e9))
        return internal_pb2.PreviewResponse(
            images=[
                headshots_pb2.PreviewImage(
                    data=img.data,
                    content_type=img.content_type,
                    seed=seed,
                    width=img.width,
                    height=img.height,
                )
                for seed, img in result.images
            ],
            model_id=result.model_id,
            latency=latency,
        )
