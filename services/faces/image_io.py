"""Safe decoding of untrusted image bytes, in bounded memory.

Every failure is an `ImageError` with a stable code from the PhotoFinding vocabulary
(UNREADABLE, UNSUPPORTED_FORMAT, ANIMATED, TOO_LARGE, TOO_MANY_PIXELS, TOO_SMALL, BUSY) and
a sentence a person can act on that quotes the one limit it hit.

Memory is decided from the header, before a pixel is decoded:
- the pixel cap (`max_pixels`) and the smallest side;
- JPEG is decoded reduced (libjpeg's DCT scaling, `Image.draft`) to the smallest size that
  still covers `max_side` when the caller needs no more: a 7000×7000 JPEG costs 1/16 of its
  full size;
- the bytes the decode will hold (decoded pixels in their own mode, plus the working copies
  for 8-bit conversion, resizing and RGB) are estimated; more than the process's decode
  budget (`decode_memory_bytes` in services.policy.limits) is refused;
- decodes share that budget: each one reserves its estimate and waits while the others
  hold the rest, so N concurrent bombs cannot add up to N × their cost.

Colour: 16-bit greyscale is scaled 65535 → 255 (not clipped: clipping makes a photo white),
palette images keep their colours, transparency is shown on white, CMYK becomes RGB, EXIF
orientation is applied.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, UnidentifiedImageError

from services.policy.limits import limits as platform_limits

try:  # HEIC/HEIF from phones
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a project dependency
    pass

MAX_BYTES = 40 * 1024 * 1024
MAX_PIXELS = 50_000_000  # ~ 8660×5770; a 200 MP phone photo is refused, a 48 MP one passes
MIN_SIDE = 64
FORMATS = ("JPEG", "PNG", "WEBP", "HEIF", "MPO", "TIFF", "BMP", "GIF")
FORMAT_NAMES = {"HEIF": "HEIC", "HEIC": "HEIC", "MPO": "JPEG", "WEBP": "WebP"}
# Waiting longer than this for room in the decode budget answers BUSY (retry later).
BUDGET_WAIT_S = 30.0

# The header checks below are the one pixel rule; Pillow's own warning would only repeat
# it with another number.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Bytes per pixel of a decoded image in each Pillow mode (default 4).
_BYTES_PER_PIXEL = {
    "1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2,
    "I;16N": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
}  # fmt: skip
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}
# Per output pixel: the RGBA working copy, the white canvas, the RGB result and the caller's
# numpy array; generous on purpose (an estimate that is too low is the dangerous one).
_OUTPUT_BYTES_PER_PIXEL = 12
# EXIF orientation → the transpose that shows the photo upright.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(ValueError):
    """A photo that cannot be used, with a stable machine code and a human sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS
    min_side: int = MIN_SIDE
    # The long side the caller needs at most: larger photos are decoded reduced (JPEG) and
    # shrunk to it. None keeps the full size.
    max_side: int | None = None
    # Bytes one decode may hold; None = the process's whole decode budget.
    max_memory: int | None = None
    formats: tuple[str, ...] = FORMATS
    allow_animated: bool = True


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # RGB, upright, at most max_side on its long side
    source_format: str  # JPEG, PNG, WebP, HEIC, ...
    source_size: tuple[int, int]  # width, height in the file's header
    memory_estimate: int = field(default=0, compare=False)


class DecodeBudget:
    """A weighted semaphore in bytes: decodes reserve their estimate and wait for room."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, cost: int, timeout: float = BUDGET_WAIT_S) -> Iterator[None]:
        cost = min(cost, self.total)
        with self._cond:
            if not self._cond.wait_for(lambda: self.used + cost <= self.total, timeout):
                raise ImageError(
                    "BUSY", "the server is decoding many photos right now; retry in a few seconds"
                )
            self.used += cost
        try:
            yield
        finally:
            with self._cond:
                self.used -= cost
                self._cond.notify_all()


@lru_cache(maxsize=1)
def decode_budget() -> DecodeBudget:
    """The process-wide budget, sized by `decode_memory_bytes`."""
    return DecodeBudget(platform_limits().decode_memory_bytes)


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def _format_name(fmt: str) -> str:
    return FORMAT_NAMES.get(fmt, fmt)


def estimate_memory(mode: str, size: tuple[int, int], out_size: tuple[int, int]) -> int:
    """Bytes a decode holds at its peak: decoded pixels, conversion, the RGB output."""
    px = size[0] * size[1]
    decoded = px * _BYTES_PER_PIXEL.get(mode, 4)
    if mode in _SIXTEEN_BIT or mode in {"I", "F"}:
        decoded += px * 5  # a float32 working array and the 8-bit result
    elif mode == "P":
        decoded += px * 4  # the palette expanded to RGBA
    return decoded + out_size[0] * out_size[1] * _OUTPUT_BYTES_PER_PIXEL


def _fit(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    w, h = size
    if not max_side or max(w, h) <= max_side:
        return w, h
    k = max_side / max(w, h)
    return max(1, round(w * k)), max(1, round(h * k))


def _truncated_container(data: bytes) -> str | None:
    """For an ISO-BMFF file (HEIC, AVIF): a sentence when a box runs past the end of data."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        return None
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1 and offset + 16 <= len(data):
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            return None  # the last box runs to the end by definition
        if size < 8:
            return None
        if offset + size > len(data):
            return (
                f"the HEIC file is truncated: its '{kind.decode('latin-1')}' section needs "
                f"{offset + size:,} bytes and only {len(data):,} arrived (an incomplete upload?)"
            )
        offset += size
    return None


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale → L, scaled by the range the mode can hold."""
    arr = np.asarray(img)
    if img.mode in _SIXTEEN_BIT:
        top = 65535.0
    elif img.mode == "F":
        top = 1.0 if float(arr.max(initial=0)) <= 1.0 else 255.0
    else:  # "I": 32-bit; PNGs and TIFFs store 16-bit data here in older Pillows
        top = 65535.0 if int(arr.max(initial=0)) > 255 else 255.0
    scaled = arr.astype(np.float32) * np.float32(255.0 / top) + np.float32(0.5)
    del arr
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")


def _shrink(img: Image.Image, out: tuple[int, int]) -> Image.Image:
    if img.size == out:
        return img
    if img.mode in ("P", "1"):
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    return img.resize(out, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        # Transparent pixels become white, as a viewer would show them on a page.
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img if img.mode == "RGB" else img.convert("RGB")


def open_rgb(data: bytes, limits: DecodeLimits | None = None) -> Decoded:
    """Bytes → an upright RGB Pillow image within `limits`. Raises ImageError, nothing else."""
    limits = limits or DecodeLimits()
    if not data:
        raise ImageError("UNREADABLE", "the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageError(
            "TOO_LARGE",
            f"the file is {len(data) / 2**20:.1f} MiB; at most {_mib(limits.max_bytes)} "
            "is accepted",
        )
    budget = decode_budget()
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _decode_open(img, limits, budget)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(
            "TOO_MANY_PIXELS", f"the image has more than {limits.max_pixels:,} pixels"
        ) from exc
    except UnidentifiedImageError as exc:
        truncated = _truncated_container(data)
        if truncated:
            raise ImageError("UNREADABLE", truncated) from exc
        raise ImageError(
            "UNREADABLE", "the file is not an image we can read (JPEG, PNG, WebP or HEIC)"
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        # Truncated or corrupt data surfaces as any of these inside Pillow's decoders.
        if "truncated" in str(exc).lower() or isinstance(exc, EOFError):
            raise ImageError(
                "UNREADABLE", "the image file is truncated (an incomplete upload?)"
            ) from exc
        raise ImageError("UNREADABLE", "the image data is damaged") from exc


def _decode_open(img: Image.Image, limits: DecodeLimits, budget: DecodeBudget) -> Decoded:
    fmt = (img.format or "").upper()
    if not limits.allow_animated and fmt != "MPO" and getattr(img, "n_frames", 1) > 1:
        raise ImageError("ANIMATED", "animated images are not accepted; send a single photo")
    if fmt not in limits.formats:
        accepted = ", ".join(dict.fromkeys(_format_name(f) for f in limits.formats))
        raise ImageError(
            "UNSUPPORTED_FORMAT", f"{fmt or 'this'} images are not accepted; send {accepted}"
        )
    width, height = img.size
    if width * height > limits.max_pixels:
        raise ImageError(
            "TOO_MANY_PIXELS",
            f"the image is {width}×{height} = {width * height:,} pixels; at most "
            f"{limits.max_pixels:,} are accepted",
        )
    if min(width, height) < limits.min_side:
        raise ImageError(
            "TOO_SMALL",
            f"the image is {width}×{height} pixels; each side must be at least {limits.min_side}",
        )
    out = _fit((width, height), limits.max_side)
    if fmt in ("JPEG", "MPO") and out != (width, height):
        # DCT scaling: libjpeg decodes at 1/2, 1/4 or 1/8 directly, never the full size.
        img.draft(img.mode, out)
    cost = estimate_memory(img.mode, img.size, out)
    allowed = min(limits.max_memory or budget.total, budget.total)
    if cost > allowed:
        raise ImageError(
            "TOO_MANY_PIXELS",
            f"decoding this {width}×{height} {_format_name(fmt)} image would need "
            f"{_mib(cost)}; at most {_mib(allowed)} is available for one photo "
            "(send it smaller, or as JPEG)",
        )
    orientation = img.getexif().get(0x0112, 1)
    with budget.hold(cost):
        img.load()
        work: Image.Image = img
        if work.mode in _SIXTEEN_BIT or work.mode in ("I", "F"):
            work = _to_8bit(work)
        work = _rgb(_shrink(work, out))
        if orientation in _ORIENTATION:
            work = work.transpose(_ORIENTATION[orientation])
    return Decoded(work, _format_name(fmt), (width, height), cost)


def decode_image(data: bytes, limits: DecodeLimits | None = None) -> np.ndarray:
    """Bytes → H×W×3 uint8 RGB, upright per EXIF. Raises ImageError, never anything else."""
    decoded = open_rgb(data, limits)
    return np.ascontiguousarray(np.asarray(decoded.image, dtype=np.uint8))
