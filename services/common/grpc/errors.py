"""gRPC errors with `google.rpc` details, so partner apps can act on them programmatically.

A servicer raises `ApiError` (or calls `abort`) and the error interceptor turns it into a
status with `BadRequest`, `QuotaFailure`, `ErrorInfo`, `PreconditionFailure` details.

Errors always arrive (AIP-193): every status carries an `ErrorInfo` (reason, domain,
metadata; the reason defaults to the code's name), and everything in it is bounded, so no
client input can push the status past gRPC's 16 KiB trailer limit: the message and each
description are clipped, control characters are replaced (a NUL in a filename is shown as
U+FFFD, never sent back raw), and past `MAX_VIOLATIONS` the rest are counted, not listed.
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
# Bounds on what one status carries; together well under gRPC's 16 KiB trailer limit.
MAX_MESSAGE = 400
MAX_DESCRIPTION = 240
MAX_VIOLATIONS = 20
MAX_METADATA_VALUE = 120
_CONTROL = dict.fromkeys([*range(0x00, 0x20), 0x7F], 0xFFFD)


def clip(text: str, limit: int) -> str:
    """`text` with control characters replaced and at most `limit` characters."""
    text = str(text).translate(_CONTROL)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _bounded(items: Sequence[tuple[str, ...]], more: tuple[str, ...]) -> list[tuple[str, ...]]:
    out = [tuple(clip(x, MAX_DESCRIPTION) for x in item) for item in items[:MAX_VIOLATIONS]]
    if len(items) > MAX_VIOLATIONS:
        n = len(items) - MAX_VIOLATIONS
        out.append(tuple(m.replace("{n}", str(n)) for m in more))
    return out


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

    @property
    def error_reason(self) -> str:
        return self.reason or self.code.name

    def to_status(self) -> status_pb2.Status:
        details: list[any_pb2.Any] = []
        if self.field_violations:
            fields = _bounded(self.field_violations, ("...", "{n} more not listed"))
            br = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in fields
                ]
            )
            details.append(_pack(br))
        if self.quota_violations:
            quotas = _bounded(self.quota_violations, ("...", "{n} more not listed"))
            qf = error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(subject=s, description=d)
                    for s, d in quotas
                ]
            )
            details.append(_pack(qf))
        if self.precondition_violations:
            pres = _bounded(self.precondition_violations, ("MORE", "...", "{n} more not listed"))
            pf = error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=t, subject=s, description=d
                    )
                    for t, s, d in pres
                ]
            )
            details.append(_pack(pf))
        metadata = {
            clip(k, 40): clip(v, MAX_METADATA_VALUE)
            for k, v in list(self.metadata.items())[:MAX_VIOLATIONS]
        }
        if self.field_violations and "field" not in metadata:
            metadata["field"] = clip(self.field_violations[0][0], MAX_METADATA_VALUE)
        details.append(
            _pack(
                error_details_pb2.ErrorInfo(
                    reason=clip(self.error_reason, 63), domain=DOMAIN, metadata=metadata
                )
            )
        )
        if self.retry_after_s is not None:
            ri = error_details_pb2.RetryInfo()
            ri.retry_delay.FromNanoseconds(int(self.retry_after_s * 1e9))
            details.append(_pack(ri))
        return status_pb2.Status(
            code=_code(self.code), message=clip(self.message, MAX_MESSAGE), details=details
        )


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
    return ApiError(
        grpc.StatusCode.NOT_FOUND,
        f"{what} not found",
        reason="NOT_FOUND",
        metadata={"resource_type": what},
    )


def invalid(message: str, *violations: tuple[str, str]) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, field_violations=violations)


def internal() -> ApiError:
    """What an unexpected failure looks like to the caller (the cause is logged, not sent)."""
    return ApiError(grpc.StatusCode.INTERNAL, "internal error; it has been logged")


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
