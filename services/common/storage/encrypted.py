"""A BlobStore that encrypts every blob under `tenants/{t}/orders/{o}/` with that order's
data key (AES-256-GCM, the blob key as associated data) and passes other keys through.

After the order's key is destroyed, `get` and `put` raise KeyDestroyed. A `put` re-checks
the database *after* storing: if a destroy committed meanwhile, the blob it just wrote is
deleted and KeyDestroyed raised. So either the writer sees the destroy and cleans up, or its
blob was stored before the destroy committed and the erasure's `delete_prefix` (which runs
after the destroy) removes it: no ciphertext outlives an erasure, even from a trainer that
was still running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.common.keys.crypto import decrypt, encrypt
from services.common.keys.keyring import KeyMissing, Keyring
from services.common.storage.base import BlobInfo, BlobNotFound, BlobStore, check_key, parse_order

# Above this, AES-GCM runs in a worker thread (≈1 ms per MiB) instead of on the event loop.
_THREAD_ABOVE = 1 << 20


class EncryptedBlobStore:
    def __init__(self, inner: BlobStore, keyring: Keyring) -> None:
        self.inner = inner
        self.keyring = keyring

    def __repr__(self) -> str:
        return f"EncryptedBlobStore({self.inner!r})"

    async def put(self, key: str, data: bytes, content_type: str | None = None) -> BlobInfo:
        order = parse_order(check_key(key))
        if order is None:
            return await self.inner.put(key, data, content_type)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"blob data must be bytes, got {type(data).__name__}")
        data_key = await self.keyring.get_or_create(*order)
        sealed = await _run(encrypt, data_key.key, bytes(data), key.encode(), size=len(data))
        info = await self.inner.put(key, sealed, content_type)
        try:
            await self.keyring.ensure_live(*order)
        except BaseException:
            # Destroyed meanwhile, or we cannot tell: do not leave the blob behind. Shielded
            # so a cancelled writer still removes it.
            await asyncio.shield(self.inner.delete(key))
            raise
        return info

    async def get(self, key: str) -> bytes:
        order = parse_order(check_key(key))
        if order is None:
            return await self.inner.get(key)
        try:
            data_key = await self.keyring.get(*order)
        except KeyMissing:
            # No key was ever made for this order, so nothing was stored through us.
            if not await self.inner.exists(key):
                raise BlobNotFound(key) from None
            raise
        sealed = await self.inner.get(key)
        return await _run(decrypt, data_key.key, sealed, key.encode(), size=len(sealed))

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)

    async def delete(self, key: str) -> bool:
        return await self.inner.delete(key)

    async def list(self, prefix: str) -> list[BlobInfo]:
        return await self.inner.list(prefix)

    async def delete_prefix(self, prefix: str) -> tuple[int, int]:
        return await self.inner.delete_prefix(prefix)


async def _run(fn: Callable[[bytes, bytes, bytes], bytes], *args: bytes, size: int) -> bytes:
    if size > _THREAD_ABOVE:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)
