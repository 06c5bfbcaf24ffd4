"""RetentionService over gRPC: Erase (answers within seconds) and Status."""

from __future__ import annotations

import grpc

from headshots.v1 import internal_pb2, internal_pb2_grpc
from services.common.grpc.errors import ApiError
from services.policy.names import ID_RULE, is_id
from services.retention.core import Retention


def _check(field: str, value: str, required: bool = True) -> None:
    if not value and not required:
        return
    if not is_id(value):
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field} must match {ID_RULE}",
            field_violations=[(field, f"invalid id {value!r}")],
        )


class RetentionServicer(internal_pb2_grpc.RetentionServiceServicer):
    def __init__(self, retention: Retention | None = None) -> None:
        # Set once the database is migrated; until then calls are answered UNAVAILABLE.
        self._retention = retention

    @property
    def retention(self) -> Retention:
        if self._retention is None:
            raise ApiError(grpc.StatusCode.UNAVAILABLE, "retention is starting; retry shortly")
        return self._retention

    @retention.setter
    def retention(self, value: Retention) -> None:
        self._retention = value

    async def Erase(
        self, request: internal_pb2.EraseRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb2.EraseResponse:
        _check("tenant_id", request.tenant_id)
        _check("order_id", request.order_id)
        try:
            receipt = await self.retention.erase(
                request.tenant_id, request.order_id, request.request_id, request.reason
            )
        except ValueError as err:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, str(err)) from err
        return internal_pb2.EraseResponse(receipt=receipt)

    async def Status(
        self, request: internal_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb2.StatusResponse:
        _check("tenant_id", request.tenant_id, required=bool(request.order_id))
        _check("order_id", request.order_id, required=False)
        return await self.retention.status(request.tenant_id, request.order_id)
