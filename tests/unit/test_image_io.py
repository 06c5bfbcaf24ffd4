"""Untrusted bytes in, RGB uint8 or a clear per-photo reason out; never a crash."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from services.faces.image_io import DecodeLimits, ImageError, decode_image
from tests.conftest import FIXTURES


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _fixture() -> Image.Image:
    return Image.open(FIXTURES / "others" / "020145.jpg").convert("RGB")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height but carries almost no data (a pixel bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "UNREADABLE"),
        (b"definitely not an image", "UNREADABLE"),
        (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "UNREADABLE"),  # JPEG magic, garbage
        (_png_header_only(20000, 20000), "TOO_MANY_PIXELS"),
        (_encode(Image.new("RGB", (1, 1)), "PNG"), "TOO_SMALL"),
    ],
    ids=["empty", "text", "corrupt-jpeg", "20000x20000-header", "1x1"],
)
def test_bad_input_gets_a_clear_reason(data: bytes, code: str) -> None:
    with pytest.raises(ImageError) as exc:
        decode_image(data)
    assert exc.value.code == code
    assert exc.value.message  # a sentence for the person


def test_truncated_jpeg_is_unreadable_not_a_crash() -> None:
    data = _encode(_fixture(), "JPEG", quality=90)
    with pytest.raises(ImageError) as exc:
        decode_image(data[: len(data) // 3])
    assert exc.value.code == "UNREADABLE"


def test_oversized_file_is_refused_before_decoding() -> None:
    with pytest.raises(ImageError) as exc:
        decode_image(b"\0" * 2048, DecodeLimits(max_bytes=1024))
    assert exc.value.code == "TOO_LARGE"


def test_cmyk_jpeg_becomes_rgb() -> None:
    rgb = _fixture()
    out = decode_image(_encode(rgb.convert("CMYK"), "JPEG", quality=95))
    assert out.shape == (rgb.height, rgb.width, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - np.asarray(rgb, int)).mean() < 12


def test_16_bit_png_is_scaled_to_8_bit() -> None:
    gray8 = np.asarray(_fixture().convert("L"), np.uint16)
    img16 = Image.fromarray((gray8 * 257).astype("<u2"))
    out = decode_image(_encode(img16, "PNG"))
    assert out.dtype == np.uint8 and out.shape == (*gray8.shape, 3)
    assert np.abs(out[..., 0].astype(int) - gray8.astype(int)).max() <= 1


def test_grayscale_palette_and_alpha_become_rgb() -> None:
    base = _fixture()
    for img in (base.convert("L"), base.convert("P"), base.convert("RGBA"), base.convert("LA")):
        out = decode_image(_encode(img, "PNG"))
        assert out.shape == (base.height, base.width, 3) and out.dtype == np.uint8
    transparent = Image.new("RGBA", (80, 80), (0, 0, 0, 0))
    assert decode_image(_encode(transparent, "PNG")).min() == 255  # shown on white


def test_exif_orientation_is_applied() -> None:
    base = _fixture()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
    out = decode_image(_encode(base.rotate(90, expand=True), "JPEG", exif=exif, quality=95))
    assert out.shape[:2] == (base.height, base.width)


def test_webp_and_real_fixture_decode() -> None:
    out = decode_image(_encode(_fixture(), "WEBP"))
    assert out.shape[2] == 3
    out = decode_image((FIXTURES / "obama" / "obama-2010-blue-room.jpg").read_bytes())
    assert out.shape == (2333, 1434, 3)


def test_bad_input_through_the_face_stack_is_a_reason_not_a_crash() -> None:
    from tests.support.face_stack import face_stack

    stack = face_stack()
    for data in (b"junk", _png_header_only(20000, 20000), _encode(Image.new("RGB", (1, 1)), "PNG")):
        with pytest.raises(ImageError):
            stack.check_selfie(decode_image(data))
    # Tiny but legal: a reason, not an exception.
    tiny = decode_image(_encode(_fixture().resize((64, 64)), "PNG"))
    assert face_stack().check_selfie(tiny).reasons
