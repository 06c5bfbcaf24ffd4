"""Safe decoding of uploaded photos: nothing the client sent is stored as sent.

Order of checks (cheapest first, nothing decoded before its cost is known):
1. byte count: empty or over `max_bytes` is refused before Pillow sees a byte;
2. the header (`services.faces.image_io`, shared with the filter and trainer): unknown data
   is UNREADABLE (a truncated HEIC says so), a format outside the allow-list (JPEG, PNG,
   WebP, HEIC/HEIF) UNSUPPORTED_FORMAT, more than one frame ANIMATED, more pixels than
   `max_pixels` TOO_MANY_PIXELS, fewer than `min_side` TOO_SMALL, and a decode that would
   need more memory than the process's decode budget TOO_MANY_PIXELS too;
3. decode, reduced to `max_side` (JPEG straight from the DCT), inside the shared decode
   budget; 16-bit, palette, CMYK and transparent images become plain RGB; EXIF orientation
   applied;
4. re-encoded from the pixels into a fresh JPEG: no EXIF, XMP, GPS, ICC or comments survive.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image

from services.faces.image_io import DecodeLimits, ImageError, open_rgb

ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "HEIF", "HEIC")
ALLOWED_TEXT = "JPEG, PNG, WebP or HEIC"


@dataclass(frozen=True)
class Refusal(Exception):
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class CleanPhoto:
    data: bytes  # a fresh JPEG
    width: int
    height: int
    source_format: str
    sha256: str  # of the cleaned bytes (what is stored)
    content_type: str = "image/jpeg"


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    min_side: int = 160
    max_side: int = 1536
    quality: int = 92


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def check_size(size: int, limits: Limits) -> None:
    if size == 0:
        raise Refusal("EMPTY", "the file is empty (0 bytes)")
    if size > limits.max_bytes:
        raise Refusal(
            "TOO_LARGE", f"the file is larger than {_mb(limits.max_bytes)} (the upload limit)"
        )


def clean(data: bytes, limits: Limits) -> CleanPhoto:
    """Decode, check, orient and re-encode one photo; raises `Refusal` with a reason code."""
    check_size(len(data), limits)
    decode = DecodeLimits(
        max_bytes=limits.max_bytes,
        max_pixels=limits.max_pixels,
        min_side=limits.min_side,
        max_side=limits.max_side,
        formats=ALLOWED_FORMATS,
        allow_animated=False,
    )
    try:
        decoded = open_rgb(data, decode)
    except ImageError as err:
        raise Refusal(err.code, err.message) from err
    rgb, source_format = decoded.image, decoded.source_format
    # A brand-new image from raw pixels carries no `info` (EXIF, XMP, ICC, comments) at all.
    fresh = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    del rgb, decoded
    out = io.BytesIO()
    fresh.save(out, "JPEG", quality=limits.quality, optimize=True)
    encoded = out.getvalue()
    return CleanPhoto(
        data=encoded,
        width=fresh.width,
        height=fresh.height,
        source_format=source_format,
        sha256=hashlib.sha256(encoded).hexdigest(),
    )
