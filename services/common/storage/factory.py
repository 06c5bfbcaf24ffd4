"""Open the blob store a URL or a service's settings name (see storage/base.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from services.common.keys.keyring import Keyring, load_master_key
from services.common.storage.base import BlobStore
from services.common.storage.encrypted import EncryptedBlobStore
from services.common.storage.local import LocalBlobStore

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)


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
        return LocalBlobStore(path)
    if url.startswith("s3://"):
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"s3 blob URL has no bucket: {url!r}")
        from services.common.storage.s3 import S3BlobStore

        return S3BlobStore(
            parts.netloc, unquote(parts.path).strip("/"), endpoint_url=endpoint, **s3_options
        )
    raise ValueError(f"unsupported blob URL {url!r}: use file:///path, file://rel/path or s3://")
