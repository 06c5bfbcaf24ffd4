"""Eyes and hands on fixture photos and on edits made from them.

Gaze test images: the irises of a real photo are moved apart (one towards each outer
corner) by repainting the eye opening with the sclera colour and pasting the iris back
shifted along the eye; moving both the same way is the control (a sideways glance).
Hand photos: three fixtures show real hands (arms crossed or hands folded).
"""

from __future__ import annotations

import numpy as np
import pytest

from services.faces.face_mesh import EyeState
from tests.support.face_stack import face_stack, photo

# Eyes ≥ 45 px wide: enough pixels for the edit to look like a moved iris.
GAZE_PHOTOS = [
    "obama/obama-2012-portrait.jpg",
    "obama/obama-briefing-room.jpg",
    "obama/obama-2010-blue-room.jpg",
    "biden/biden-vp-portrait.jpg",
    "biden/biden-2010-blue-room.jpg",
]
HAND_PHOTOS = [
    "biden/biden-senate-bioguide.jpg",
    "others/014226.jpg",
    "partial/obama-partial-face-1.jpg",
]
NO_HAND_PHOTOS = [
    "obama/obama-president-bioguide.jpg",
    "obama/obama-briefing-room.jpg",
    "biden/biden-vp-portrait.jpg",
    "others/020145.jpg",
    "others/029908.jpg",  # the palm detector fires on the forehead; the landmark model says no
]


def shift_iris(image: np.ndarray, eye: EyeState, fraction: float) -> np.ndarray:
    """Move one iris along its eye by `fraction` of the eye width (+ = towards image right)."""
    out = image.copy()
    a, b = eye.corners
    width = eye.width
    unit = (b - a) / width
    normal = np.array([-unit[1], unit[0]])
    centre = (a + b) / 2
    half_h = eye.openness * width / 2 * 1.2
    iris_c = eye.iris[0]
    radius = float(np.mean(np.linalg.norm(eye.iris[1:] - iris_c, axis=1))) * 1.4
    x0, y0 = np.floor(np.minimum(a, b) - width).astype(int)
    x1, y1 = np.ceil(np.maximum(a, b) + width).astype(int)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    pts = np.stack([xs, ys], -1).astype(np.float64)
    u = (pts - centre) @ unit / (width / 2 * 0.95)
    v = (pts - centre) @ normal / half_h
    opening = u**2 + v**2 <= 1.0
    patch = image[y0:y1, x0:x1].astype(np.float64)
    in_iris = np.linalg.norm(pts - iris_c, axis=-1) <= radius
    white = patch[opening & ~in_iris]
    luma = white @ np.array([0.299, 0.587, 0.114])
    sclera = np.median(white[luma >= np.percentile(luma, 75)], axis=0)
    new = patch.copy()
    new[opening] = sclera
    d = unit * fraction * width
    src = np.rint(pts - d).astype(int)
    take = opening & (np.linalg.norm(pts - d - iris_c, axis=-1) <= radius)
    new[take] = image[src[take][:, 1], src[take][:, 0]]
    out[y0:y1, x0:x1] = np.clip(new, 0, 255).astype(np.uint8)
    return out


@pytest.mark.parametrize("name", GAZE_PHOTOS)
def test_eyes_looking_different_ways_are_rejected(name: str) -> None:
    stack = face_stack()
    image = photo(name)
    original = stack.check_selfie(image)
    assert original.mesh is not None
    assert "EYES_INCONSISTENT" not in original.reasons
    mesh = original.mesh
    assert min(mesh.eye_image_left.width, mesh.eye_image_right.width) >= 45

    apart = shift_iris(shift_iris(image, mesh.eye_image_left, -0.3), mesh.eye_image_right, 0.3)
    edited = stack.check_selfie(apart)
    # Rejected for the eyes. On narrow eyes (obama-2012, lid gap 0.22) the repainted opening
    # also moves the iris model's lids together, and EYES_CLOSED comes first.
    assert {"EYES_INCONSISTENT", "EYES_CLOSED"} & set(edited.reasons), edited.reasons
    assert not edited.usable
    assert edited.mesh is not None
    # the edit moves the iris: the eyes disagree more than in the original
    assert edited.mesh.gaze_disagreement > mesh.gaze_disagreement + 0.05

    # Control: both irises moved the same way is a glance, not a defect.
    glance = shift_iris(shift_iris(image, mesh.eye_image_left, 0.3), mesh.eye_image_right, 0.3)
    assert "EYES_INCONSISTENT" not in stack.check_selfie(glance).reasons


def test_irises_sit_inside_their_eyes_and_eyes_are_open_on_fixtures() -> None:
    stack = face_stack()
    for name in GAZE_PHOTOS:
        mesh = stack.check_selfie(photo(name)).mesh
        assert mesh is not None
        for eye in (mesh.eye_image_left, mesh.eye_image_right):
            assert 0.2 < eye.gaze[0] < 0.8, name
            assert 0.1 < eye.openness < 0.5, name
            lo, hi = eye.corners.min(0), eye.corners.max(0)
            assert lo[0] < eye.iris[0][0] < hi[0], name


@pytest.mark.parametrize("name", HAND_PHOTOS)
def test_a_visible_hand_is_reported(name: str) -> None:
    check = face_stack().check_selfie(photo(name))
    assert "HAND_VISIBLE" in check.reasons
    hand = check.hands[0]
    assert hand.presence >= 0.5
    assert hand.landmarks.shape == (21, 2)
    # The 21 points lie around the detected palm, not scattered over the photo.
    x1, y1, x2, y2 = hand.palm_box
    size = max(x2 - x1, y2 - y1)
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    assert np.all(np.linalg.norm(hand.landmarks - centre, axis=1) < 3 * size)


@pytest.mark.parametrize("name", NO_HAND_PHOTOS)
def test_no_hand_where_there_is_none(name: str) -> None:
    check = face_stack().check_selfie(photo(name))
    assert "HAND_VISIBLE" not in check.reasons
    assert check.hands == []


def test_a_hand_pasted_into_another_photo_is_found() -> None:
    """Composite: Biden's folded hands pasted over a photo that has none."""
    stack = face_stack()
    donor = photo("biden/biden-senate-bioguide.jpg")
    hand = stack.hands(donor)[0]
    x1, y1, x2, y2 = hand.palm_box.astype(int)
    pad = int(0.8 * (x2 - x1))
    piece = donor[max(0, y1 - pad) : y2 + pad, max(0, x1 - pad) : x2 + pad]
    target = photo("others/020145.jpg").copy()
    h, w = piece.shape[:2]
    target[-h:, :w] = piece
    assert stack.hands(photo("others/020145.jpg")) == []
    assert stack.hands(target), "the pasted hand should be detected"
    assert "HAND_VISIBLE" in stack.check_selfie(target).reasons


def test_hands_are_batched() -> None:
    stack = face_stack()
    images = [photo(n) for n in (*HAND_PHOTOS[:2], *NO_HAND_PHOTOS[:2])]
    found = stack.hands_batch(images)
    assert [bool(h) for h in found] == [True, True, False, False]


def _calibration_edits():
    """The calibration set's own edit functions (tests/fixtures/filter-calibration)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "fixtures/filter-calibration/make_synthetic.py"
    spec = importlib.util.spec_from_file_location("make_synthetic", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_smudged_eye_and_irises_parting_vertically_are_seen_in_the_pixels() -> None:
    """The iris model barely moves its iris for these edits; the eye's own pixels do.

    Measured on the five large-eyed fixture photos with the calibration set's own edits:
    one eye smudged is caught on 4 (on biden-2010-blue-room the smudged eye was already
    the softer one); irises parted vertically by 0.15 eye widths each way on 3 (on the
    narrowest eyes the lids cover the top and bottom of both irises, so a vertical shift
    shows little; 0.1 each way is caught on none of these real photos, while the
    calibration set's wide-open generated eyes show it).
    """
    from services.faces.eyes import eye_finding

    edits = _calibration_edits()
    stack = face_stack()
    t = stack.eye_thresholds
    smudges = partings = 0
    for name in GAZE_PHOTOS:
        image = photo(name)
        mesh = stack.check_selfie(image).mesh
        assert mesh is not None
        left, right = mesh.eye_image_left, mesh.eye_image_right
        clean = eye_finding(mesh, t)
        assert clean.reason is None, (name, clean.why)

        smudged = stack.check_selfie(edits.smudge_eye(image, right)).mesh
        assert smudged is not None
        smudges += eye_finding(smudged, t).why == "one eye smudged"

        updown = edits.move_iris(edits.move_iris(image, left, 0.0, -0.15), right, 0.0, 0.15)
        parted = stack.check_selfie(updown).mesh
        assert parted is not None
        partings += eye_finding(parted, t).reason == "EYES_INCONSISTENT"

        # Control: both irises raised alike is a glance upwards, not a defect.
        up = edits.move_iris(edits.move_iris(image, left, 0.0, -0.1), right, 0.0, -0.1)
        glance = stack.check_selfie(up).mesh
        assert glance is not None
        assert eye_finding(glance, t).reason != "EYES_INCONSISTENT", name
    assert smudges >= 4
    assert partings >= 3
