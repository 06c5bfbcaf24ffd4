"""Checks on what a client sends, each answered with the field it concerns."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import grpc
from google.protobuf.message import Message

from headshots.v1 import headshots_pb2 as pb
from services.common.grpc.errors import ApiError
from services.policy import names
from services.policy.limits import limits
from services.policy.prompt_screen import screen_prompt
from services.policy.retention import load as load_retention
from services.policy.styles import platform_catalogue

MAX_DISPLAY_NAME = 200


def ids_of(name: str, pattern: re.Pattern[str], what: str, field: str) -> tuple[str, ...]:
    """The ids in resource name `name` (field `field` of the request).

    Empty or malformed is the client's mistake (INVALID_ARGUMENT naming the field); a
    well-formed name that does not resolve is NOT_FOUND, decided by the caller.
    """
    parsed = names.parse(name, pattern)
    if parsed is None:
        shape = names.PATTERNS.get(pattern, "a resource name")
        problem = "is required" if not name else f"must be {shape} with ids {names.ID_RULE}"
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field} {problem}",
            [(field, f"{what} name {problem}")],
            reason="INVALID_NAME",
        )
    return parsed


def request_hash(request: Message) -> str:
    """What a request asks for, without its request_id: same hash = same request."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")  # type: ignore[arg-type]
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def check_request_id(request_id: str) -> None:
    """AIP-155: a request id is a UUID (any version), in its canonical text form."""
    if not request_id:
        return
    try:
        ok = len(request_id) == 36 and str(uuid.UUID(request_id)) == request_id.lower()
    except ValueError:
        ok = False
    if not ok:
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "request_id must be a UUID such as 3f2b8c1e-9d4a-4b7e-8f00-1c2d3e4f5a6b",
            [("request_id", "not a UUID")],
            reason="INVALID_REQUEST_ID",
        )


def reused(request_id: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.ALREADY_EXISTS,
        "this request_id was already used for a different request; use a new UUID",
        [("request_id", "used before with a different request body")],
        reason="REQUEST_ID_REUSED",
        metadata={"request_id": request_id},
    )


def quota(message: str, subject: str, description: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        message,
        quota_violations=[(subject, description)],
        reason="QUOTA",
    )


def order_values(spec: pb.Order) -> dict[str, Any]:
    """The columns of a new order from the client's spec, or INVALID_ARGUMENT / quota."""
    lim = limits()
    catalogue = platform_catalogue()
    violations: list[tuple[str, str]] = []
    unknown = [x for x in spec.style_ids if x not in catalogue.ids()]
    if unknown:
        violations.append(
            (
                "order.style_ids",
                f"{len(unknown)} unknown style id(s), e.g. {unknown[0][:40]!r}; see ListStyles",
            )
        )
    prompt = spec.custom_prompt.strip()
    # The generator's own screen, so a prompt it would refuse never trains a model.
    screened = screen_prompt(prompt)
    if not screened.ok:
        violations.append(("order.custom_prompt", screened.reason))
    keep = load_retention().photo_days_bounds()
    days = spec.photo_retention_days or keep.default
    if not keep.low <= days <= keep.high:
        violations.append(("order.photo_retention_days", f"must be {keep.low}..{keep.high}"))
    if spec.candidate_count < 0 or spec.result_count < 0:
        violations.append(("order", "candidate_count and result_count must not be negative"))
    if spec.subject_class not in pb.SubjectClass.values():
        violations.append(("order.subject_class", "unknown subject class"))
    if len(spec.display_name) > MAX_DISPLAY_NAME:
        violations.append(("order.display_name", f"longer than {MAX_DISPLAY_NAME} characters"))
    if violations:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "the order is not valid", violations)
    candidates = spec.candidate_count or lim.default_candidate_count
    results_n = spec.result_count or lim.default_result_count
    if candidates > lim.max_candidate_count:
        raise quota(
            f"candidate_count {candidates} is over the limit of {lim.max_candidate_count}",
            "order.candidate_count",
            f"at most {lim.max_candidate_count} candidates per order",
        )
    if results_n > lim.max_result_count:
        raise quota(
            f"result_count {results_n} is over the limit of {lim.max_result_count}",
            "order.result_count",
            f"at most {lim.max_result_count} results per order",
        )
    return {
        "display_name": spec.display_name,
        "style_ids": list(spec.style_ids),
        "custom_prompt": prompt,
        "subject_class": spec.subject_class,
        "candidate_count": candidates,
        "result_count": results_n,
        "photo_retention_days": days,
        "keep_model": spec.keep_model,
    }


def check_preview(request: pb.CreatePreviewRequest) -> None:
    violations = []
    if request.style_id not in platform_catalogue().ids():
        violations.append(("style_id", "unknown style; see ListStyles"))
    if not 0 <= request.count <= limits().max_preview_count:
        violations.append(("count", f"must be 1..{limits().max_preview_count} (0 = 2)"))
    screened = screen_prompt(request.custom_prompt)
    if not screened.ok:
        violations.append(("custom_prompt", screened.reason))
    if violations:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "the preview is not valid", violations)


def check_photo_count(row: Any, usable: int) -> None:
    need = limits().min_photos
    if usable < need:
        raise ApiError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"the order has {usable} usable photos; at least {need} are needed",
            precondition_violations=[
                (
                    "PHOTOS",
                    names.order_name(row.tenant_id, row.order_id),
                    f"upload at least {need - usable} more usable photo(s)",
                )
            ],
            reason="NOT_ENOUGH_PHOTOS",
        )
