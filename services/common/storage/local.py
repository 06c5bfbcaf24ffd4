"""Blobs in a local folder (embedded default, tests): one file per key.

Writes are atomic: a hidden temp file in the target folder, fsync, rename over the target,
fsync of the folder, so a reader sees the old bytes or the new, never half a file, and a
crash leaves at most a temp file that `list` ignores. File IO runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from services.common.storage.base import (
    BlobInfo,
    BlobNotFound,
    InvalidKey,
    check_delete_prefix,
    check_key,
    check_prefix,
)


class LocalBlobStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes, content_type: str | None = None) -> BlobInfo:
        path = self._path(key)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"blob data must be bytes, got {type(data).__name__}")
        return await asyncio.to_thread(self._put, key, path, data)

    def _put(self, key: str, path: Path, data: bytes) -> BlobInfo:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InvalidKey(f"blob key {key!r} runs through an existing blob") from None
        if path.is_dir():
            raise InvalidKey(f"blob key {key!r} is a prefix of existing blobs")
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        _fsync_dir(path.parent)
        return _info(key, path.stat())

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def delete(self, key: str) -> bool:
        path = self._path(key)
        return await asyncio.to_thread(self._delete, path)

    def _delete(self, path: Path) -> bool:
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return False
        self._prune(path.parent)
        return True

    def _prune(self, folder: Path) -> None:
        # Remove folders left empty, up to the root; a concurrent put may refill one, so
        # "not empty" and "already gone" are both fine.
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    async def list(self, prefix: str) -> list[BlobInfo]:
        check_prefix(prefix)
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> list[BlobInfo]:
        start = self.root / prefix.rpartition("/")[0]
        found: list[BlobInfo] = []
        for folder, dirs, files in os.walk(start):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel = Path(folder).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith("."):  # temp files of writes in flight
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if not key.startswith(prefix):
                    continue
                try:
                    found.append(_info(key, os.stat(os.path.join(folder, name))))
                except FileNotFoundError:  # deleted while we walked
                    continue
        found.sort(key=lambda b: b.key)
        return found

    async def delete_prefix(self, prefix: str) -> tuple[int, int]:
        check_delete_prefix(prefix)
        return await asyncio.to_thread(self._delete_prefix, prefix)

    def _delete_prefix(self, prefix: str) -> tuple[int, int]:
        objects = size = 0
        for blob in self._list(prefix):
            path = self.root / blob.key
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            objects += 1
            size += blob.size
        folder = self.root / prefix.rstrip("/")
        if folder.is_dir():
            # Only empty folders (and temp files of writes that lost the race) remain.
            for sub, _dirs, _files in sorted(os.walk(folder), key=lambda t: -len(t[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(sub)
            self._prune(folder.parent)
        return objects, size


def _info(key: str, st: os.stat_result) -> BlobInfo:
    return BlobInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
