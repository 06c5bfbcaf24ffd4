"""Blob storage: one async interface, local-folder and S3 backends, order-scoped keys.

Keys look like `tenants/{tenant}/orders/{order}/{kind}/{name}` (build them with `blob_key`);
everything an order owns sits under `order_prefix(tenant, order)`, so erasure is one
`delete_prefix`. Kinds in use: photos, adapter, checkpoints, candidates, previews.

`storage.factory.open_blob_store(url)` gives a raw backend; with `(settings, engine=engine)`
what services use: the backend of `HS_BLOB_URL`, wrapped in per-order AES-256-GCM encryption
when `HS_MASTER_KEY` is set (services/common/storage/encrypted.py). Sizes reported by `put`,
`list` and `delete_prefix` are bytes at rest (ciphertext when encrypted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from services.policy import names

KIND_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
KINDS = ("photos", "adapter", "checkpoints", "candidates", "previews")
MAX_KEY_CHARS = 1024
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


class BlobStoreError(Exception):
    """A storage backend failed (other than a missing blob)."""


class BlobNotFound(BlobStoreError, LookupError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no blob at {key!r}")
        self.key = key


class InvalidKey(BlobStoreError, ValueError):
    """A key, prefix or id that the store refuses (bad characters, `..`, absolute, ...)."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int  # bytes at rest
    modified: datetime  # UTC


@runtime_checkable
class BlobStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str | None = None) -> BlobInfo: ...

    async def get(self, key: str) -> bytes:
        """The blob's bytes; raises BlobNotFound."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> bool:
        """True if a blob was there."""
        ...

    async def list(self, prefix: str) -> list[BlobInfo]:
        """Blobs whose key starts with `prefix` (a plain string prefix), sorted by key."""
        ...

    async def delete_prefix(self, prefix: str) -> tuple[int, int]:
        """Delete every blob under `prefix` (must end with "/"); returns (objects, bytes)."""
        ...


# ---- keys -------------------------------------------------------------------------------


def check_id(value: str, what: str = "id") -> str:
    """The platform's id format (services.policy.names), refused as a bad blob key."""
    try:
        return names.check_id(value, what)
    except names.InvalidId as err:
        raise InvalidKey(str(err)) from err


def check_key(key: str) -> str:
    """A relative, normalised key: segments of printable characters, none empty or hidden."""
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"blob key must be a non-empty string, got {key!r}")
    _check_chars(key, "blob key")
    if key.startswith("/"):
        raise InvalidKey(f"blob key {key!r} is absolute; keys are relative")
    for segment in key.split("/"):
        _check_segment(segment, key)
    return key


def check_prefix(prefix: str) -> str:
    """Like a key, but may be empty and may end with "/"."""
    if not isinstance(prefix, str):
        raise InvalidKey(f"prefix must be a string, got {type(prefix).__name__}")
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def check_delete_prefix(prefix: str) -> str:
    # "tenants/t/orders/o" would also match "tenants/t/orders/o2/...": a directory-style
    # prefix is the only safe unit of bulk deletion, and "" would delete everything.
    check_prefix(prefix)
    if not prefix.endswith("/"):
        raise InvalidKey(f"delete_prefix needs a prefix ending with '/', got {prefix!r}")
    return prefix


def _check_chars(key: str, what: str) -> None:
    if len(key) > MAX_KEY_CHARS:
        raise InvalidKey(f"{what} is longer than {MAX_KEY_CHARS} characters")
    if _BAD_CHARS.search(key):
        raise InvalidKey(f"{what} {key!r} contains a control character or backslash")


def _check_segment(segment: str, key: str) -> None:
    if segment in ("", ".", ".."):
        raise InvalidKey(f"blob key {key!r} has an empty, '.' or '..' segment")
    if segment.startswith("."):
        # Also keeps user keys apart from the local backend's temp files (".name.tmp").
        raise InvalidKey(f"blob key {key!r} has a hidden segment {segment!r}")


def order_prefix(tenant_id: str, order_id: str) -> str:
    return f"tenants/{check_id(tenant_id, 'tenant id')}/orders/{check_id(order_id, 'order id')}/"


def blob_key(tenant_id: str, order_id: str, kind: str, name: str) -> str:
    """`tenants/{t}/orders/{o}/{kind}/{name}`; `name` may contain "/" (e.g. step-500/x.bin)."""
    if not isinstance(kind, str) or not KIND_RE.fullmatch(kind):
        raise InvalidKey(f"blob kind {kind!r} is not valid (e.g. {', '.join(KINDS)})")
    return check_key(f"{order_prefix(tenant_id, order_id)}{kind}/{name}")


def parse_order(key: str) -> tuple[str, str] | None:
    """(tenant_id, order_id) for a key under an order, None for any other key.

    A key shaped like an order key with invalid ids raises InvalidKey rather than returning
    None, so it can never slip past per-order encryption as an "other" key.
    """
    parts = key.split("/", 4)
    if len(parts) < 4 or parts[0] != "tenants" or parts[2] != "orders":
        return None
    return check_id(parts[1], "tenant id"), check_id(parts[3], "order id")
