"""Selfies on the client side: which files of a folder are photos, and how one upload
stream carries them."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator, Sequence
from pathlib import Path

from headshots.v1 import headshots_pb2 as pb

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"})
# gRPC refuses a message over 4 MiB by default; 1 MiB chunks stay well inside it, and the
# gateway counts a photo's bytes as they arrive, so an oversized photo is refused early.
CHUNK_BYTES = 1024 * 1024

# A photo to upload: a file, or (filename, bytes) already in memory.
PhotoSource = Path | tuple[str, bytes]


class PhotoFolderError(ValueError):
    """The folder is missing or holds no photo."""


def photo_files(folder: Path) -> list[Path]:
    """The photos of `folder` (by suffix), sorted by name."""
    if not folder.is_dir():
        raise PhotoFolderError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise PhotoFolderError(f"no photos (jpg, png, webp, heic) in {folder}")
    return files


def source_name(photo: PhotoSource) -> str:
    return photo.name if isinstance(photo, Path) else photo[0]


def upload_requests(
    order_name: str, photos: Sequence[PhotoSource], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[pb.UploadPhotosRequest]:
    """The messages of one UploadPhotos stream.

    The first message names the order; each photo's first chunk carries its filename and
    content type, which is how the gateway tells where one photo ends and the next begins.
    A file is read only when its turn comes, so a large set is never all in memory.
    """
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    first = True
    for photo in photos:
        name = source_name(photo)
        data = photo.read_bytes() if isinstance(photo, Path) else photo[1]
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        # An empty file still sends one (empty) chunk, so the gateway can refuse it by name.
        for start in range(0, max(len(data), 1), chunk_bytes):
            req = pb.UploadPhotosRequest(data=data[start : start + chunk_bytes])
            if first:
                req.parent = order_name
                first = False
            if start == 0:
                req.filename = name
                req.content_type = content_type
            yield req
