"""CenterFace + mesh on the fixture photos: a face in every whole-face photo, none usable
in the half-cut ones, and sensible landmarks, chips and quality numbers."""

from __future__ import annotations

import numpy as np
import pytest

from services.faces.face_stack import align_chip
from services.faces.quality import laplacian_variance
from tests.support.face_stack import face_stack, photo, photos

WHOLE = photos("obama") + photos("biden") + photos("others")


def test_fixture_folders_are_all_there() -> None:
    assert len(photos("obama")) == 6 and len(photos("biden")) == 3
    assert len(photos("others")) == 40 and len(photos("partial")) == 2


def test_a_face_is_found_in_every_whole_face_photo_in_batches() -> None:
    stack = face_stack()
    found = []
    for start in range(0, len(WHOLE), 8):
        names = WHOLE[start : start + 8]
        for name, faces in zip(names, stack.detect([photo(n) for n in names]), strict=True):
            found.append((name, faces))
    missing = [n for n, faces in found if not faces]
    assert not missing
    for name, faces in found:
        face = faces[0]
        le, re, nose, ml, mr = face.landmarks
        x1, y1, x2, y2 = face.box
        # Landmarks inside the box, eyes above the nose above the mouth, left left of right.
        assert np.all(
            (face.landmarks >= np.array([x1, y1]) - 2) & (face.landmarks <= np.array([x2, y2]) + 2)
        ), name
        assert le[0] < re[0] and ml[0] < mr[0], name
        assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1]), name
        # One person per photo: no second face of comparable size.
        assert all(f.width < 0.5 * face.width for f in faces[1:]), name


def test_batched_detection_equals_single_images() -> None:
    stack = face_stack()
    names = ["others/014226.jpg", "others/020145.jpg", "biden/biden-senate-bioguide.jpg"]
    batched = stack.detect([photo(n) for n in names])
    for name, faces in zip(names, batched, strict=True):
        single = stack.detect([photo(name)])[0]
        assert len(single) == len(faces)
        # A batch shares one canvas (its largest photo's size), so a smaller photo is scaled
        # a little differently than alone: boxes agree to a few per cent of the face.
        np.testing.assert_allclose(faces[0].box, single[0].box, atol=0.08 * single[0].width)


@pytest.mark.parametrize("name", photos("partial"))
def test_half_cut_faces_are_not_usable_selfies(name: str) -> None:
    check = face_stack().check_selfie(photo(name))
    assert not check.usable
    assert "PARTIAL_FACE" in check.reasons


@pytest.mark.parametrize(
    "name", ["obama/obama-2012-portrait.jpg", "biden/biden-vp-portrait.jpg", "others/020145.jpg"]
)
def test_whole_face_portraits_are_usable_selfies(name: str) -> None:
    check = face_stack().check_selfie(photo(name))
    assert check.usable, check.reasons
    assert check.mesh is not None and check.mesh.presence > 0.9
    yaw, pitch, roll = check.pose
    assert abs(yaw) < 25 and abs(pitch) < 25 and abs(roll) < 15


def test_a_photo_without_a_face_gets_no_face() -> None:
    # Sky and curtain from a fixture: a real photo region with no face in it.
    image = photo("obama/obama-2010-blue-room.jpg")[:220, :]
    assert face_stack().detect([image])[0] == []
    assert face_stack().check_selfie(image).reasons == ["NO_FACE"]
    noise = np.random.default_rng(3).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    assert "NO_FACE" in face_stack().check_selfie(noise).reasons


def test_align_chip_puts_the_eyes_level_at_fixed_places() -> None:
    stack = face_stack()
    image = photo("obama/obama-briefing-room.jpg")  # head tilted in the photo
    face = stack.detect([image])[0][0]
    chip = align_chip(image, face.landmarks, size=150, padding=0.25)
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    again = stack.detect([chip])[0][0]
    le, re = again.landmarks[:2]
    assert abs(le[1] - re[1]) < 4  # level
    # Template: eyes at x ≈ 0.45 / 0.79 of the tight crop → 150 * (t + .25) / 1.5.
    assert abs(le[0] - 150 * (38.29 / 112 + 0.25) / 1.5) < 6
    assert abs(re[0] - 150 * (73.53 / 112 + 0.25) / 1.5) < 6


def test_blur_lowers_sharpness_below_the_gate() -> None:
    from PIL import Image, ImageFilter

    stack = face_stack()
    image = photo("obama/obama-2012-portrait.jpg")
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(8)))
    sharp = stack.check_selfie(image)
    soft = stack.check_selfie(blurred)
    assert sharp.sharpness > 10 * soft.sharpness
    assert "BLURRED" in soft.reasons and "BLURRED" not in sharp.reasons
    assert laplacian_variance(np.full((32, 32), 128.0)) == 0.0
