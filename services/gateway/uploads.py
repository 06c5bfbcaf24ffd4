"""Safe decoding of uploaded photos: nothing the client sent is stored as sent.

Order of checks (cheapest first, nothing decoded before its size is known):
1. byte count: empty or over `max_bytes` is refused before Pillow sees a byte;
2. `Image.open` reads only the header: unknown data is UNREADABLE, a format outside the
   allow-list (JPEG, PNG, WebP, HEIC/HEIF) UNSUPPORTED_FORMAT, more than one frame ANIMATED,
   more pixels than `max_pixels` TOO_MANY_PIXELS (checked from the header, and Pillow's own
   DecompressionBombWarning is an error too), fewer than `min_side` TOO_SMALL;
3. full decode (a truncated file is UNREADABLE), EXIF orientation applied;
4. re-encoded from the pixels into a fresh JPEG: no EXIF, XMP, GPS, ICC or comments survive.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF support comes from pillow-heif's Pillow plugin.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF = True
except ImportError:  # pragma: no cover - pillow-heif is a declared dependency
    HEIF = False

ALLOWED_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "HEIF": "HEIC", "HEIC": "HEIC"}
ALLOWED_TEXT = "JPEG, PNG, WebP or HEIC"
# Pillow's own limit: past it Image.open warns (we make that an error); past twice it raises.
Image.MAX_IMAGE_PIXELS = 50_000_000
warnings.simplefilter("error", Image.DecompressionBombWarning)


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
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _clean_open(img, limits)
    except Refusal:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise Refusal(
            "TOO_MANY_PIXELS",
            f"the image has more pixels than the {limits.max_pixels:,} allowed ({err})",
        ) from err
    except UnidentifiedImageError as err:
        raise Refusal("UNREADABLE", f"the file is not an image ({ALLOWED_TEXT} expected)") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        text = str(err)
        if "truncated" in text.lower():
            raise Refusal("UNREADABLE", "the image file is truncated (incomplete upload?)") from err
        raise Refusal("UNREADABLE", f"the image could not be decoded ({text})") from err


def _clean_open(img: Image.Image, limits: Limits) -> CleanPhoto:
    fmt = (img.format or "").upper()
    if getattr(img, "is_animated", False) or getattr(img, "n_frames", 1) > 1:
        raise Refusal("ANIMATED", "animated images are not accepted; send a single photo")
    if fmt not in ALLOWED_FORMATS:
        raise Refusal(
            "UNSUPPORTED_FORMAT", f"{fmt or 'this'} format is not accepted ({ALLOWED_TEXT})"
        )
    width, height = img.size
    if width * height > limits.max_pixels:
        raise Refusal(
            "TOO_MANY_PIXELS",
            f"{width}x{height} is more than the {limits.max_pixels:,} pixels allowed",
        )
    img.load()  # full decode: truncated and corrupt data fail here
    oriented = ImageOps.exif_transpose(img)
    if min(oriented.size) < limits.min_side:
        raise Refusal(
            "TOO_SMALL",
            f"{oriented.width}x{oriented.height} is too small"
            f" (at least {limits.min_side} px a side)",
        )
    rgb = _to_rgb(oriented)
    if max(rgb.size) > limits.max_side:
        rgb.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
    # A brand-new image from raw pixels carries no `info` (EXIF, XMP, ICC, comments) at all.
    fresh = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    out = io.BytesIO()
    fresh.save(out, "JPEG", quality=limits.quality, optimize=True)
    data = out.getvalue()
    return CleanPhoto(
        data=data,
        width=fresh.width,
        height=fresh.height,
        source_format=ALLOWED_FORMATS[fmt],
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        # Transparent areas become white, as a photo printed on paper would.
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")
