"""Blob storage: one async interface, local-folder and S3 backends, order-scoped keys.

Keys look like `tenants/{tenant}/orders/{order}/{kind}/{name}` (build them with `blob_key`);
everything an order owns sits under `order_prefix(tenant, order)`, so erasure is one
`delete_prefix`. Kinds in use: photos, adapter, checkpoints, candidates, previews.

`open_blob_store(url)` gives a raw backend; `open_blob_store(settings, engine=engine)` gives
what services use: the backend of `HS_BLOB_URL`, wrapped in per-order AES-256-GCM encryption
when `HS_MASTER_KEY` is set (services/common/blobs_encrypted.py). Sizes reported by `put`,
`list` and `delete_prefix` are bytes at rest (ciphertext when encrypted).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)

ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
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
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidKey(f"{what} {value!r} is not a valid id ([a-z0-9][a-z0-9-]{{0,62}})")
    return value


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


# ---- opening ----------------------------------------------------------------------------


def open_blob_store(
    target: str | ServiceSettings,
    *,
    engine: AsyncEngine | None = None,
    s3_endpoint_url: str | None = None,
    base_dir: Path | str | None = None,
    **s3_options: Any,
) -> BlobStore:
    """A store from a URL, or the configured (and, with a master key, encrypted) store.

    URLs: `file:///abs/path`, `file://relative/path` (relative to `base_dir` or the working
    directory), `s3://bucket[/prefix]` (endpoint from `s3_endpoint_url`; credentials and
    region from the usual AWS environment, or `s3_options` passed to boto3's client).
    With settings: `settings.blob_url`, `settings.s3_endpoint_url`, and when
    `settings.master_key` is set an EncryptedBlobStore whose keyring uses `engine` (the
    keyring schema must be migrated: `await db.migrate(url, "keyring")`).
    """
    if isinstance(target, str):
        return _open_url(target, s3_endpoint_url, base_dir, s3_options)
    settings = target
    store = _open_url(
        settings.blob_url, s3_endpoint_url or settings.s3_endpoint_url, base_dir, s3_options
    )
    if settings.master_key is None:
        log.warning("HS_MASTER_KEY is not set: blobs are stored UNENCRYPTED (demo/tests only)")
        return store
    if engine is None:
        raise ValueError("HS_MASTER_KEY is set: open_blob_store(settings) needs engine= for keys")
    from services.common.blobs_encrypted import EncryptedBlobStore
    from services.common.keyring import Keyring, load_master_key

    keyring = Keyring(engine, load_master_key(settings), settings.master_key_id)
    return EncryptedBlobStore(store, keyring)


def _open_url(
    url: str, endpoint: str | None, base_dir: Path | str | None, s3_options: dict[str, Any]
) -> BlobStore:
    if not isinstance(url, str):
        raise ValueError(f"blob URL must be a string, got {type(url).__name__}")
    if url.startswith("file://"):
        raw = unquote(url[len("file://") :])
        if not raw:
            raise ValueError("file:// blob URL has no path")
        path = Path(raw)
        if not path.is_absolute():
            path = Path(base_dir or Path.cwd()) / path
        from services.common.blobs_local import LocalBlobStore

        return LocalBlobStore(path)
    if url.startswith("s3://"):
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"s3 blob URL has no bucket: {url!r}")
        from services.common.blobs_s3 import S3BlobStore

        return S3BlobStore(
            parts.netloc, unquote(parts.path).strip("/"), endpoint_url=endpoint, **s3_options
        )
    raise ValueError(f"unsupported blob URL {url!r}: use file:///path, file://rel/path or s3://")
