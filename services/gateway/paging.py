"""Page tokens and sizes for the List methods (AIP-158).

A token is the next offset bound to the request's scope (parent and filters), so a token
from one listing cannot be replayed against another.
"""

from __future__ import annotations

import base64
import json

import grpc

from services.common.grpc.errors import ApiError

DEFAULT_PAGE = 50
MAX_PAGE = 200


def offset_of(token: str, scope: str) -> int:
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["s"] != scope or int(data["o"]) < 0:
            raise ValueError
        return int(data["o"])
    except (ValueError, KeyError, TypeError) as err:
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token is not valid for this request",
            field_violations=[("page_token", "not a token from the previous page")],
        ) from err


def token_of(offset: int, scope: str) -> str:
    raw = json.dumps({"s": scope, "o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def page_size(size: int) -> int:
    if size < 0:
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_size must not be negative",
            field_violations=[("page_size", "must be >= 0")],
        )
    return min(size or DEFAULT_PAGE, MAX_PAGE)
