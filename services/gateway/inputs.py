"""Text a client sends that PostgreSQL or a person cannot take, refused before any method.

PostgreSQL text cannot hold NUL, so a NUL anywhere in a request's strings would fail deep
in a query (INTERNAL). This interceptor walks every string of a unary request and answers
INVALID_ARGUMENT naming the field instead; the streamed uploads clean their filenames
themselves (`photos_api`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.common.grpc.errors import ApiError

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def bad_text_fields(msg: Message, prefix: str = "") -> Iterator[str]:
    """Paths of string fields in `msg` that contain a NUL."""
    for fd, value in msg.ListFields():
        path = f"{prefix}{fd.name}"
        if fd.type == _STRING:
            values = value if _repeated(fd) else [value]
            if any("\x00" in v for v in values):
                yield path
        elif fd.type == _MESSAGE and not fd.message_type.GetOptions().map_entry:
            for i, sub in enumerate(value if _repeated(fd) else [value]):
                index = f"[{i}]" if _repeated(fd) else ""
                yield from bad_text_fields(sub, f"{path}{index}.")


def _repeated(fd: FieldDescriptor) -> bool:
    return bool(fd.is_repeated)


def check_text(request: Message) -> None:
    bad = list(bad_text_fields(request))
    if bad:
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "text fields must not contain NUL characters",
            [(path, "contains a NUL character") for path in bad],
            reason="INVALID_TEXT",
        )


class TextCheck(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith("/headshots."):
            return handler
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                check_text(request)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                check_text(request)
                async for item in inner_stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
