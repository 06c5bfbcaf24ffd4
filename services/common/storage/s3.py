"""Blobs in any S3-compatible store (AWS S3, MinIO, Ceph RGW, moto in tests).

boto3 is synchronous, so each call runs in a worker thread; one client is shared by all
threads (boto3 clients are thread-safe, sessions are not). `list` follows continuation
tokens; `delete_prefix` deletes in batches of 1000, the DeleteObjects maximum.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.common.storage.base import (
    BlobInfo,
    BlobNotFound,
    BlobStoreError,
    check_delete_prefix,
    check_key,
    check_prefix,
)

_MISSING = {"NoSuchKey", "404", "NotFound"}
_BATCH = 1000


class S3BlobStore:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any | None = None,
        page_size: int = 1000,
        delete_batch: int = _BATCH,
        **client_options: Any,
    ) -> None:
        if not bucket:
            raise ValueError("S3BlobStore needs a bucket name")
        if not 1 <= delete_batch <= _BATCH or not 1 <= page_size <= 1000:
            raise ValueError("page_size and delete_batch must be within 1..1000 (S3 limits)")
        self.page_size = page_size
        self.delete_batch = delete_batch
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region_name,
            config=Config(retries={"mode": "standard", "max_attempts": 5}),
            **client_options,
        )

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    async def _call(self, op: str, **kw: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self.client, op), Bucket=self.bucket, **kw)
        except ClientError as e:
            if _code(e) in _MISSING:
                raise
            raise BlobStoreError(f"S3 {op} on {self.bucket}: {e}") from e
        except BotoCoreError as e:
            raise BlobStoreError(f"S3 {op} on {self.bucket}: {e}") from e

    async def put(self, key: str, data: bytes, content_type: str | None = None) -> BlobInfo:
        check_key(key)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"blob data must be bytes, got {type(data).__name__}")
        await self._call(
            "put_object",
            Key=self.prefix + key,
            Body=bytes(data),
            ContentType=content_type or "application/octet-stream",
        )
        # The server's LastModified would cost a HEAD; the local clock is close enough here.
        return BlobInfo(key, len(data), datetime.now(UTC))

    async def get(self, key: str) -> bytes:
        check_key(key)
        try:
            response = await self._call("get_object", Key=self.prefix + key)
        except ClientError as e:
            raise BlobNotFound(key) from e
        body = response["Body"]
        try:
            return await asyncio.to_thread(body.read)
        finally:
            body.close()

    async def exists(self, key: str) -> bool:
        check_key(key)
        try:
            await self._call("head_object", Key=self.prefix + key)
        except ClientError:
            return False
        return True

    async def delete(self, key: str) -> bool:
        # S3 deletes are idempotent and do not say whether anything was there: ask first.
        existed = await self.exists(key)
        if existed:
            await self._call("delete_object", Key=self.prefix + key)
        return existed

    async def list(self, prefix: str) -> list[BlobInfo]:
        check_prefix(prefix)
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> list[BlobInfo]:
        found: list[BlobInfo] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket,
            Prefix=self.prefix + prefix,
            PaginationConfig={"PageSize": self.page_size},
        )
        try:
            for page in pages:
                for obj in page.get("Contents", ()):
                    key = obj["Key"][len(self.prefix) :]
                    found.append(BlobInfo(key, int(obj["Size"]), obj["LastModified"]))
        except (ClientError, BotoCoreError) as e:
            raise BlobStoreError(f"S3 list of {self.bucket}/{self.prefix}{prefix}: {e}") from e
        found.sort(key=lambda b: b.key)
        return found

    async def delete_prefix(self, prefix: str) -> tuple[int, int]:
        check_delete_prefix(prefix)
        blobs = await self.list(prefix)
        objects = size = 0
        for start in range(0, len(blobs), self.delete_batch):
            batch = blobs[start : start + self.delete_batch]
            response = await self._call(
                "delete_objects",
                Delete={"Objects": [{"Key": self.prefix + b.key} for b in batch], "Quiet": True},
            )
            failed = {e["Key"][len(self.prefix) :]: e for e in response.get("Errors", ())}
            for blob in batch:
                if blob.key not in failed:
                    objects += 1
                    size += blob.size
            if failed:
                first = next(iter(failed.values()))
                raise BlobStoreError(
                    f"S3 refused to delete {len(failed)} object(s) under {prefix!r} "
                    f"(after {objects} deleted), e.g. {first.get('Key')}: {first.get('Code')}"
                )
        return objects, size


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
