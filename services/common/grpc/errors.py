"""gRPC errors with `google.rpc` details, so partner apps can act on them programmatically.

A servicer raises `ApiError` (or calls `abort`) and the error interceptor turns it into a
status with `BadRequest`, `QuotaFailure`, `ErrorInfo`, `PreconditionFailure` details.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

# Trailing-metadata key that carries a serialised google.rpc.Status (gRPC's wire name).
GRPC_DETAILS_METADATA_KEY = "grpc-status-details-bin"

DOMAIN = "headshots.v1"


@dataclass
class ApiError(Exception):
    code: grpc.StatusCode
    message: str
    field_violations: Sequence[tuple[str, str]] = ()
    quota_violations: Sequence[tuple[str, str]] = ()
    precondition_violations: Sequence[tuple[str, str, str]] = ()
    reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def to_status(self) -> status_pb2.Status:
        details: list[any_pb2.Any] = []
        if self.field_violations:
            br = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.field_violations
                ]
            )
            details.append(_pack(br))
        if self.quota_violations:
            qf = error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(subject=s, description=d)
                    for s, d in self.quota_violations
                ]
            )
            details.append(_pack(qf))
        if self.precondition_violations:
            pf = error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=t, subject=s, description=d
                    )
                    for t, s, d in self.precondition_violations
                ]
            )
            details.append(_pack(pf))
        if self.reason:
            details.append(
                _pack(
                    error_details_pb2.ErrorInfo(
                        reason=self.reason, domain=DOMAIN, metadata=dict(self.metadata)
                    )
                )
            )
        if self.retry_after_s is not None:
            ri = error_details_pb2.RetryInfo()
            ri.retry_delay.FromNanoseconds(int(self.retry_after_s * 1e9))
            details.append(_pack(ri))
        return status_pb2.Status(code=_code(self.code), message=self.message, details=details)


def _pack(msg: object) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)  # type: ignore[arg-type]
    return a


def _code(code: grpc.StatusCode) -> int:
    return int(code.value[0]) if code != grpc.StatusCode.OK else code_pb2.OK


async def abort(context: grpc.aio.ServicerContext, error: ApiError) -> None:
    """Abort the RPC with rich details (never returns)."""
    await context.abort_with_status(rpc_status.to_status(error.to_status()))


def not_found(what: str) -> ApiError:
    # Same message whether the resource is missing or belongs to another tenant.
    return ApiError(grpc.StatusCode.NOT_FOUND, f"{what} not found")


def invalid(message: str, *violations: tuple[str, str]) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, field_violations=violations)


def details_of(error: grpc.RpcError) -> list[object]:
    """Client side: decode the google.rpc details of a failed call (tests, CLI)."""
    status = status_of(error)
    if status is None:
        return []
    out: list[object] = []
    for d in status.details:
        for cls in (
            error_details_pb2.BadRequest,
            error_details_pb2.QuotaFailure,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
        ):
            if d.Is(cls.DESCRIPTOR):
                m = cls()
                d.Unpack(m)
                out.append(m)
    return out


def status_of(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status in a failed call's trailers (sync and aio calls alike)."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == GRPC_DETAILS_METADATA_KEY:
            return status_pb2.Status.FromString(value)
    return None
