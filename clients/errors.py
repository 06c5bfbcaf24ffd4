"""What a failed call says beyond its status code: the `google.rpc` details the gateway
attaches (which field is wrong and why, which quota was hit, which precondition failed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from google.protobuf import message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

M = TypeVar("M", bound=message.Message)


def rich_status(err: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status in a failed call's trailers (sync and aio calls alike); None
    when the server sent none, or one that contradicts the call's own code or message."""
    if not hasattr(err, "trailing_metadata"):
        return None  # raised before any call was made
    try:
        return rpc_status.from_call(err)  # type: ignore[arg-type]
    except ValueError:
        return None


def unpack_detail(status: status_pb2.Status | None, cls: type[M]) -> M | None:
    """The first detail of type `cls` in the status, if there is one."""
    for detail in status.details if status is not None else ():
        if detail.Is(cls.DESCRIPTOR):
            found = cls()
            detail.Unpack(found)
            return found
    return None


@dataclass(frozen=True)
class ErrorDetails:
    """The details of a failed call, flattened for a person or a program to read."""

    # (field, why): e.g. ("photos[3]", "BLURRED: photo 4 (x.jpg) was refused: ...").
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    # (subject, why): which quota was hit.
    quota_violations: list[tuple[str, str]] = field(default_factory=list)
    # (subject, why): what has to be true first (e.g. the order's state).
    preconditions: list[tuple[str, str]] = field(default_factory=list)
    # ErrorInfo's machine-readable reason, e.g. PHOTOS_REFUSED; "" when absent.
    reason: str = ""
    retry_after_s: float | None = None

    def lines(self) -> list[str]:
        """One line per violation, in the order above."""
        return (
            [f"{f} {why}" for f, why in self.field_violations]
            + [f"quota {s}: {why}" for s, why in self.quota_violations]
            + [f"{s}: {why}" for s, why in self.preconditions]
        )


def error_details(err: grpc.RpcError) -> ErrorDetails:
    status = rich_status(err)
    bad = unpack_detail(status, error_details_pb2.BadRequest)
    quota = unpack_detail(status, error_details_pb2.QuotaFailure)
    pre = unpack_detail(status, error_details_pb2.PreconditionFailure)
    info = unpack_detail(status, error_details_pb2.ErrorInfo)
    retry = unpack_detail(status, error_details_pb2.RetryInfo)
    return ErrorDetails(
        field_violations=[(v.field, v.description) for v in bad.field_violations] if bad else [],
        quota_violations=[(v.subject, v.description) for v in quota.violations] if quota else [],
        preconditions=[(v.subject, v.description) for v in pre.violations] if pre else [],
        reason=info.reason if info else "",
        retry_after_s=retry.retry_delay.ToNanoseconds() / 1e9 if retry else None,
    )
