"""Hostile and unusual photos decode in bounded memory, with the right colours or a clear
reason: header-only bombs, 16-bit greyscale, palette, CMYK, truncated HEIC, and the shared
decode budget that concurrent decodes wait on."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from services.faces.image_io import (
    DecodeBudget,
    DecodeLimits,
    ImageError,
    decode_image,
    estimate_memory,
    open_rgb,
)
from services.gateway.uploads import Limits, Refusal, clean
from services.policy.limits import limits as platform_limits
from tests.conftest import FIXTURES, ROOT

FACE = FIXTURES / "obama" / "obama-2012-portrait.jpg"


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def bomb_jpeg(side: int = 7000) -> bytes:
    """A complete flat-grey JPEG: ~0.5 MB on disk, side² pixels decoded."""
    return _encode(Image.new("L", (side, side), 128), "JPEG", quality=1)


def header_only_bomb(side: int = 7000, keep: int = 28 * 1024) -> bytes:
    """The first 28 KB of a side×side JPEG: a full header that claims 49 MP, almost no data."""
    return _encode(Image.new("RGB", (side, side), (120, 90, 60)), "JPEG", quality=1)[:keep]


def _script(code: str) -> str:
    """A fresh interpreter's script: run `code` (which sets `out`) on the file in argv[1]
    and print `out` as JSON with the peak-RSS growth (MiB) it caused after the imports."""
    script = (
        "import json, resource, sys\n"
        "from services.faces.image_io import open_rgb, DecodeLimits, ImageError\n"
        "from services.gateway.uploads import clean, Limits, Refusal\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{code}\n"
        "out['grew_mib'] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024\n"
        "print(json.dumps(out))\n"
    )
    return script


def _run(script: str, data: bytes, tmp_path) -> dict[str, object]:
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ bombs


def test_a_7000px_jpeg_upload_is_decoded_reduced_in_a_few_mib(tmp_path) -> None:
    """Before: ~600 MiB for one such file. The upload keeps at most 1536 px a side, so the
    JPEG is decoded at 1/4 scale straight from the DCT."""
    script = _script("c = clean(data, Limits())\nout = {'w': c.width, 'h': c.height}")
    out = _run(script, bomb_jpeg(), tmp_path)
    assert (out["w"], out["h"]) == (1536, 1536)
    assert out["grew_mib"] < 80, out


def test_a_header_only_bomb_is_refused_as_truncated_in_a_few_mib(tmp_path) -> None:
    script = _script(
        "try:\n"
        "    clean(data, Limits())\n"
        "    out = {'code': 'STORED'}\n"
        "except Refusal as r:\n"
        "    out = {'code': r.code, 'message': r.message}"
    )
    out = _run(script, header_only_bomb(), tmp_path)
    assert out["code"] == "UNREADABLE" and "truncated" in str(out["message"]), out
    assert out["grew_mib"] < 80, out


def test_a_full_size_decode_that_would_exceed_the_budget_is_refused_from_the_header() -> None:
    """Without a size to reduce to, 49 MP would need more than the decode budget: refused
    before any pixel is decoded, saying how much it would need and the one limit."""
    data = header_only_bomb()
    t0 = time.perf_counter()
    with pytest.raises(ImageError) as exc:
        decode_image(data)
    assert time.perf_counter() - t0 < 1.0  # nothing was decoded
    assert exc.value.code == "TOO_MANY_PIXELS"
    budget_mib = platform_limits().decode_memory_bytes // 2**20
    assert f"{budget_mib} MiB" in exc.value.message
    assert "7000×7000" in exc.value.message


def test_too_many_pixels_quotes_one_limit() -> None:
    big = _encode(Image.new("L", (10_000, 6_000)), "PNG")  # 60 MP, zlib makes it tiny
    with pytest.raises(Refusal) as exc:
        clean(big, Limits())
    assert exc.value.code == "TOO_MANY_PIXELS"
    numbers = [w for w in exc.value.message.replace("=", " ").split() if w[:1].isdigit()]
    # the image's own size, and the platform's single limit; nothing from Pillow
    assert "50,000,000" in exc.value.message
    assert "89478485" not in exc.value.message and "limit of" not in exc.value.message
    assert len([n for n in numbers if "," in n]) == 2, exc.value.message  # 60,000,000 vs cap
    far_over = _encode(Image.new("1", (20_000, 10_000)), "PNG")  # 200 MP: Pillow's own error
    with pytest.raises(Refusal) as exc:
        clean(far_over, Limits())
    assert exc.value.code == "TOO_MANY_PIXELS"
    assert exc.value.message == "the image has more than 50,000,000 pixels"


def test_memory_estimate_follows_the_mode_and_the_reduced_size() -> None:
    full = estimate_memory("RGB", (7000, 7000), (7000, 7000))
    reduced = estimate_memory("RGB", (1750, 1750), (1536, 1536))
    assert full > 500 * 2**20 and reduced < 40 * 2**20
    assert estimate_memory("I;16", (100, 100), (100, 100)) > estimate_memory(
        "L", (100, 100), (100, 100)
    )


# ------------------------------------------------------------------------------ colours


def test_a_16_bit_greyscale_png_of_a_face_is_still_a_face() -> None:
    """Before: the upload clipped 16-bit values to 255, an almost white image, NO_FACE."""
    from tests.support.face_stack import face_stack

    gray8 = np.asarray(Image.open(FACE).convert("L"), np.uint16)
    png16 = _encode(Image.fromarray((gray8 * 257).astype("<u2")), "PNG")
    assert Image.open(io.BytesIO(png16)).mode.startswith("I")
    stored = clean(png16, Limits())
    pixels = decode_image(stored.data)
    assert 60 < pixels.mean() < 200  # a photo, not a white sheet
    check = face_stack().check_selfie(pixels)
    assert "NO_FACE" not in check.reasons, check.reasons
    original = face_stack().check_selfie(decode_image(FACE.read_bytes()))
    assert check.usable == original.usable


def test_palette_png_keeps_its_colours() -> None:
    src = Image.open(FACE).convert("RGB").resize((400, 500))
    palette = src.quantize(colors=256)
    out = open_rgb(_encode(palette, "PNG")).image
    diff = np.abs(np.asarray(out, int) - np.asarray(palette.convert("RGB"), int)).mean()
    assert diff < 1.0
    stored = Image.open(io.BytesIO(clean(_encode(palette, "PNG"), Limits()).data))
    assert np.abs(np.asarray(stored, int) - np.asarray(src, int)).mean() < 12


def test_palette_png_with_transparency_is_shown_on_white() -> None:
    img = Image.new("P", (200, 200), 0)
    img.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    img.paste(1, (50, 50, 150, 150))
    out = np.asarray(open_rgb(_encode(img, "PNG", transparency=0)).image)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[100, 100].tolist() == [200, 30, 30]


def test_cmyk_jpeg_upload_keeps_its_colours() -> None:
    src = Image.open(FACE).convert("RGB")
    stored = clean(_encode(src.convert("CMYK"), "JPEG", quality=95), Limits())
    out = Image.open(io.BytesIO(stored.data)).convert("RGB")
    expected = src.copy()
    expected.thumbnail((1536, 1536))
    assert out.size == expected.size
    assert np.abs(np.asarray(out, int) - np.asarray(expected, int)).mean() < 12


def test_truncated_heic_says_truncated() -> None:
    src = Image.open(FACE).convert("RGB").resize((600, 750))
    heic = _encode(src, "HEIF", quality=80)
    assert open_rgb(heic).source_format == "HEIC"
    for cut in (len(heic) // 2, len(heic) - 100):
        with pytest.raises(Refusal) as exc:
            clean(heic[:cut], Limits())
        assert exc.value.code == "UNREADABLE"
        assert "truncated" in exc.value.message and "HEIC" in exc.value.message


def test_reduced_jpeg_decode_matches_a_full_decode() -> None:
    src = Image.open(FACE).convert("RGB")
    data = _encode(src.resize((src.width * 2, src.height * 2)), "JPEG", quality=95)
    reduced = open_rgb(data, DecodeLimits(max_side=max(src.size))).image
    assert reduced.size == src.size
    assert np.abs(np.asarray(reduced, int) - np.asarray(src, int)).mean() < 6


# ------------------------------------------------------------------------------ budget


def test_the_decode_budget_makes_concurrent_decodes_wait_and_answers_busy() -> None:
    budget = DecodeBudget(100)
    order: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    def first() -> None:
        with budget.hold(70):
            order.append("first in")
            entered.set()
            release.wait(5)
        order.append("first out")

    def second() -> None:
        with budget.hold(70, timeout=5):
            order.append("second in")

    a = threading.Thread(target=first)
    a.start()
    assert entered.wait(5)
    b = threading.Thread(target=second)
    b.start()
    time.sleep(0.2)
    assert order == ["first in"]  # 70 + 70 > 100: the second waits
    with pytest.raises(ImageError) as exc:
        with budget.hold(40, timeout=0.05):
            pass
    assert exc.value.code == "BUSY"
    with budget.hold(30, timeout=0.05):  # 70 + 30 fits
        pass
    release.set()
    a.join(5)
    b.join(5)
    assert order == ["first in", "first out", "second in"]
    assert budget.used == 0


def test_one_decode_over_its_own_memory_cap_is_refused() -> None:
    data = _encode(Image.open(FACE).convert("RGB"), "PNG")
    with pytest.raises(ImageError) as exc:
        decode_image(data, DecodeLimits(max_memory=1 * 2**20))
    assert exc.value.code == "TOO_MANY_PIXELS" and "1 MiB" in exc.value.message
