"""Safe decoding of untrusted image bytes into RGB uint8 arrays.

Every failure is an `ImageError` with a stable code from the PhotoFinding vocabulary
(UNREADABLE, UNSUPPORTED_FORMAT, TOO_LARGE, TOO_MANY_PIXELS, TOO_SMALL) and a sentence a
person can act on. The pixel cap is checked on the header, before any pixel is decoded, so
a 20000×20000 "decompression bomb" costs nothing.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF from phones; optional at run time
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a project dependency
    pass

MAX_BYTES = 40 * 1024 * 1024
MAX_PIXELS = 50_000_000  # ~ 8660×5770; a 200 MP phone photo is refused, a 48 MP one passes
MIN_SIDE = 64
FORMATS = ("JPEG", "PNG", "WEBP", "HEIF", "MPO", "TIFF", "BMP", "GIF")


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


def _to_rgb(img: Image.Image) -> np.ndarray:
    """RGB uint8 from any Pillow mode: 16-bit, float, grayscale, palette, alpha, CMYK."""
    mode = img.mode
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I"}:
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit files keep full range in 0..65535; 32-bit "I" may hold anything.
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        # Transparent pixels become white, as a viewer would show them on a page.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def decode_image(data: bytes, limits: DecodeLimits | None = None) -> np.ndarray:
    """Bytes → H×W×3 uint8 RGB, upright per EXIF. Raises ImageError, never anything else."""
    limits = limits or DecodeLimits()
    if not data:
        raise ImageError("UNREADABLE", "the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageError(
            "TOO_LARGE",
            f"the file is {len(data) / 2**20:.0f} MiB; at most "
            f"{limits.max_bytes / 2**20:.0f} MiB is accepted",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if img.format not in FORMATS:
                raise ImageError(
                    "UNSUPPORTED_FORMAT",
                    f"{img.format} images are not accepted; send JPEG, PNG, WebP or HEIC",
                )
            if width * height > limits.max_pixels:
                raise ImageError(
                    "TOO_MANY_PIXELS",
                    f"the image is {width}×{height} pixels; at most "
                    f"{limits.max_pixels / 1e6:.0f} megapixels are accepted",
                )
            if min(width, height) < limits.min_side:
                raise ImageError(
                    "TOO_SMALL",
                    f"the image is {width}×{height} pixels; each side must be "
                    f"at least {limits.min_side}",
                )
            img.load()
            img = ImageOps.exif_transpose(img) or img
            rgb = _to_rgb(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("TOO_MANY_PIXELS", "the image has too many pixels") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("UNREADABLE", "the file is not an image we can read") from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        # Truncated or corrupt data surfaces as any of these inside Pillow's decoders.
        raise ImageError("UNREADABLE", "the image data is damaged or incomplete") from exc
    return np.ascontiguousarray(rgb)
