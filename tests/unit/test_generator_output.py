"""Delivered files: marked as AI-generated, no EXIF/GPS, nothing about the order inside."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.generator.output import DIGITAL_SOURCE_TYPE, digital_source_type, encode_image

PIXELS = np.random.default_rng(7).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize(("fmt", "ctype"), [("png", "image/png"), ("jpeg", "image/jpeg")])
def test_marked_as_ai_generated_and_free_of_exif(fmt: str, ctype: str) -> None:
    out = encode_image(PIXELS, fmt)  # type: ignore[arg-type]
    assert out.content_type == ctype and (out.width, out.height) == (64, 48)
    assert digital_source_type(out.data) == DIGITAL_SOURCE_TYPE
    with Image.open(io.BytesIO(out.data)) as img:
        assert img.format == ("PNG" if fmt == "png" else "JPEG")
        assert len(img.getexif()) == 0
        assert "exif" not in img.info and "icc_profile" not in img.info
    # No EXIF segment, no GPS anywhere in the bytes.
    assert b"Exif\x00\x00" not in out.data and b"GPS" not in out.data


def test_png_has_text_chunk_and_exact_pixels() -> None:
    out = encode_image(PIXELS, "png")
    with Image.open(io.BytesIO(out.data)) as img:
        assert img.text["AI-Generated"] == "true"
        assert img.text["DigitalSourceType"] == DIGITAL_SOURCE_TYPE
        assert np.array_equal(np.asarray(img), PIXELS)


def test_metadata_of_a_source_image_does_not_survive() -> None:
    src = Image.fromarray(PIXELS)
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {2: (52.0, 31.0, 0.0)}  # GPSInfo
    buf = io.BytesIO()
    src.save(buf, format="JPEG", exif=exif)
    tagged = Image.open(io.BytesIO(buf.getvalue()))
    assert len(tagged.getexif()) > 0
    for fmt in ("png", "jpeg"):
        out = encode_image(tagged, fmt)  # type: ignore[arg-type]
        with Image.open(io.BytesIO(out.data)) as img:
            assert len(img.getexif()) == 0
        assert b"PhoneMaker" not in out.data


def test_seed_style_and_model_are_not_in_the_file() -> None:
    out = encode_image(PIXELS, "png")
    for secret in (b"seed", b"style", b"model", b"order"):
        assert secret not in out.data.lower()


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        encode_image(np.zeros((4, 4)), "png")
    with pytest.raises(ValueError, match="unsupported output format"):
        encode_image(PIXELS, "gif")  # type: ignore[arg-type]
