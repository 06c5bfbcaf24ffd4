"""Training crops from real selfies: eyes level on the target row in every crop (checked by
detecting the face again in the crop), the face centred, partial faces refused with a
reason, bad input refused with a reason rather than a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.trainer.dataset import augmented, caption
from services.trainer.preprocess import CropGeometry, Preprocessor

RES = 256  # big enough for the detector to find the face again in the crop


@pytest.fixture(scope="module")
def pre(models_dir: Path) -> Preprocessor:
    if not (models_dir / "face" / "centerface.onnx").is_file():
        pytest.skip("face stack not built (make models)")
    return Preprocessor.load(models_dir / "face", CropGeometry(RES))


def _photos(folder: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(folder.glob("*.jpg"))]


def test_crops_have_the_eye_line_on_the_target_row(pre: Preprocessor, faces_dir: Path) -> None:
    result = pre.run(_photos(faces_dir / "obama"))
    assert len(result.crops) == 6, result.summary()
    target = pre.geometry.eye_row
    found = pre.face_stack.detect([c.image for c in result.crops])
    for crop, faces in zip(result.crops, found, strict=True):
        assert crop.image.shape == (RES, RES, 3) and crop.image.dtype == np.uint8
        assert faces, f"no face found again in the crop of {crop.name}"
        eyes = faces[0].landmarks[:2]
        # Within a few pixels of the target row (2 % of the side), and level.
        assert np.abs(eyes[:, 1] - target).max() < 0.02 * RES, (crop.name, eyes)
        # Face centred: the eye midpoint on the middle column.
        assert abs(eyes[:, 0].mean() - RES / 2) < 0.03 * RES, (crop.name, eyes)


def test_partial_faces_are_refused_with_a_reason(pre: Preprocessor, faces_dir: Path) -> None:
    result = pre.run(_photos(faces_dir / "partial"))
    assert result.crops == []
    assert {r.code for r in result.rejected} == {"PARTIAL_FACE"}
    assert all("cut off" in r.message for r in result.rejected)
    assert "dropped" in result.summary()


def test_bad_input_is_refused_not_crashed(pre: Preprocessor) -> None:
    blank = np.full((300, 300, 3), 128, np.uint8)
    result = pre.run([("empty.jpg", b""), ("garbage.png", b"\x89PNG not really"), ("blank", blank)])
    codes = {r.name: r.code for r in result.rejected}
    assert codes == {"empty.jpg": "UNREADABLE", "garbage.png": "UNREADABLE", "blank": "NO_FACE"}


def test_flip_augmentation_keeps_the_eye_line(pre: Preprocessor, faces_dir: Path) -> None:
    crops = pre.run(_photos(faces_dir / "obama")[:1]).crops
    both = augmented(crops, flip=True)
    assert [c.name for c in both] == [crops[0].name, crops[0].name + "#flip"]
    np.testing.assert_array_equal(both[1].image, crops[0].image[:, ::-1])
    np.testing.assert_allclose(both[1].landmarks[:2, 1], crops[0].landmarks[:2, 1][::-1])


def test_caption_uses_token_and_class() -> None:
    assert caption("ohwx", "woman") == "a photo of ohwx woman"
    with pytest.raises(ValueError):
        caption("two words", "man")
    with pytest.raises(ValueError):
        caption("ohwx", "dog")
