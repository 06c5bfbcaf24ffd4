"""AnalyzeSelfies over a set larger than one batch: the face stack never sees more than
ANALYSIS_BATCH photos at once and no photo's pixels outlive its batch, yet every photo gets
its verdict and the set its verdict (real ONNX models, fixture photos)."""

from __future__ import annotations

import io
from functools import lru_cache

from PIL import Image

from services.faces.identity import IdentityModel
from services.filter.analysis import ANALYSIS_BATCH, SelfieAnalyzer
from tests.conftest import FIXTURES
from tests.support.face_stack import built_models, face_stack


@lru_cache(maxsize=1)
def analyzer() -> SelfieAnalyzer:
    return SelfieAnalyzer(face_stack(), IdentityModel.load(built_models(), intra_op_threads=2))


def small_jpeg(path) -> bytes:
    img = Image.open(path).convert("RGB")
    img.thumbnail((384, 384))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def test_a_large_set_is_analysed_in_bounded_batches() -> None:
    a = analyzer()
    obama = sorted((FIXTURES / "obama").glob("*.jpg"))
    items = [(f"p{i}", small_jpeg(obama[i % len(obama)])) for i in range(9)]
    items.append(("junk", b"not a photo"))
    batches: list[int] = []
    alive: list[int] = []
    detect = a.stack.detect

    def counting_detect(images):  # the real detector, counted
        batches.append(len(images))
        alive.append(sum(1 for p in live_photos if p.image is not None))
        return detect(images)

    live_photos: list = []
    real_batch = a._analyze_batch

    def tracking_batch(photos, data):
        live_photos.extend(photos)
        return real_batch(photos, data)

    a.stack.detect = counting_detect  # type: ignore[method-assign]
    a._analyze_batch = tracking_batch  # type: ignore[method-assign]
    try:
        response = a.analyze(items)
    finally:
        del a.stack.detect, a._analyze_batch
    assert max(batches) <= ANALYSIS_BATCH and sum(batches) == 9
    assert max(alive) <= ANALYSIS_BATCH  # earlier batches' pixels are gone
    by_id = {p.photo_id: p for p in response.photos}
    assert [p.photo_id for p in response.photos] == [pid for pid, _ in items]
    assert {f.code for f in by_id["junk"].findings} == {"UNREADABLE"}
    assert all(len(by_id[f"p{i}"].embedding) > 0 for i in range(9))
    # Copies of six photos across batches are still found as duplicates of each other.
    assert any(f.code == "DUPLICATE" for i in range(6, 9) for f in by_id[f"p{i}"].findings)
    assert response.set.usable_count >= 5
