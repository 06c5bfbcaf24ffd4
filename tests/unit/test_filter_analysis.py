"""AnalyzeSelfies and candidate scoring on the fixture photos, through the real ONNX models."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import pytest
from PIL import Image, ImageFilter

from headshots.v1 import internal_pb2
from services.faces.identity import IdentityModel
from services.filter.analysis import SelfieAnalyzer
from services.filter.scoring import CandidateScorer
from tests.conftest import FIXTURES
from tests.support.face_stack import built_models, face_stack, photo, photos
from tests.unit.test_eyes_hands import shift_iris


@lru_cache(maxsize=1)
def analyzer() -> SelfieAnalyzer:
    return SelfieAnalyzer(face_stack(), IdentityModel.load(built_models(), intra_op_threads=2))


@lru_cache(maxsize=1)
def scorer() -> CandidateScorer:
    a = analyzer()
    return CandidateScorer(a.stack, a.identity)


def raw(relative: str) -> bytes:
    return (FIXTURES / relative).read_bytes()


def png(rgb: np.ndarray | Image.Image) -> bytes:
    img = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def render_512(relative: str) -> np.ndarray:
    """A fixture photo as a generator would deliver it: a 512 px square headshot."""
    img = Image.fromarray(photo(relative))
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return np.asarray(img.crop((left, top, left + side, top + side)).resize((512, 512)))


def codes(a: internal_pb2.SelfieAnalysis) -> set[str]:
    return {f.code for f in a.findings}


# ------------------------------------------------------------------ AnalyzeSelfies


@pytest.fixture(scope="module")
def mixed_upload() -> tuple[list[str], internal_pb2.AnalyzeSelfiesResponse]:
    names = photos("obama") + photos("biden")[:2]
    response = analyzer().analyze([(n, raw(n)) for n in names])
    return names, response


def test_six_obama_two_biden_names_exactly_the_biden_photos(mixed_upload) -> None:
    names, response = mixed_upload
    assert [p.photo_id for p in response.photos] == names
    biden = {n for n in names if n.startswith("biden/")}
    assert set(response.set.different_person) == biden
    by_id = {p.photo_id: p for p in response.photos}
    for n in biden:
        assert not by_id[n].usable
        assert "DIFFERENT_PERSON" in codes(by_id[n])
        odd = next(f for f in by_id[n].findings if f.code == "DIFFERENT_PERSON")
        assert odd.blocking and odd.message
    # The people behind the photos are told apart by the numbers too.
    obama_d = [by_id[n].identity_distance for n in names if n not in biden]
    assert max(obama_d) < min(by_id[n].identity_distance for n in biden)
    assert response.set.identity_consistency == pytest.approx(6 / 8)


def test_the_portrait_stored_twice_is_a_duplicate_of_the_first(mixed_upload) -> None:
    _names, response = mixed_upload
    by_id = {p.photo_id: p for p in response.photos}
    dup = by_id["obama/obama-senate-bioguide.jpg"]
    assert dup.duplicate_of == "obama/obama-president-bioguide.jpg"
    assert not dup.usable and "DUPLICATE" in codes(dup)
    usable = [p.photo_id for p in response.photos if p.usable]
    assert len(usable) == response.set.usable_count == 5
    assert all(n.startswith("obama/") for n in usable)


def test_each_photo_carries_its_measurements(mixed_upload) -> None:
    _names, response = mixed_upload
    for p in response.photos:
        assert len(p.faces) >= 1 and len(p.faces[0].landmarks) == 10
        assert p.face_size_px > 40 and p.sharpness > 15 and 0.2 < p.exposure < 0.8
        assert abs(p.pose.yaw) < 45 and p.width > 0 and p.height > 0
        assert len(p.embedding) == 128
    assert len(response.set.reference_embedding) == 128
    # The fixture set has several head turns and lighting set-ups.
    assert response.set.variety_score > 0.5
    assert "LOW_VARIETY" not in {f.code for f in response.set.findings}


def test_copies_of_one_shot_are_refused_as_duplicates() -> None:
    img = Image.fromarray(photo("obama/obama-briefing-room.jpg"))
    # Re-cropped and re-scaled copies of one shot: nothing new for training.
    items = []
    for i, shift in enumerate((0, 20, 40, 60)):
        # Same aspect ratio: a copy is resized, not stretched.
        crop = img.crop((shift, 0, img.width - 60 + shift, img.height))
        crop = crop.resize((640, round(640 * crop.height / crop.width)))
        items.append((f"p{i}", png(crop)))
    response = analyzer().analyze(items)
    assert [p.usable for p in response.photos] == [True, False, False, False]
    assert {p.duplicate_of for p in response.photos[1:]} == {"p0"}


def test_a_set_of_one_pose_in_one_light_is_told_to_vary() -> None:
    a = analyzer()
    same = internal_pb2.SetAnalysis()
    varied = internal_pb2.SetAnalysis()
    flat = [_photo(yaw=1.0 * i, pitch=0.0, exposure=0.5) for i in range(5)]
    turned = [_photo(yaw=y, pitch=p, exposure=e) for y, p, e in _VARIED]
    a._variety(flat, same)
    a._variety(turned, varied)
    assert same.variety_score < 0.15 < varied.variety_score
    low = [f for f in same.findings if f.code == "LOW_VARIETY"]
    assert low and not low[0].blocking and low[0].message
    assert not varied.findings


_VARIED = [(-20, 0, 0.35), (0, 10, 0.5), (20, -5, 0.6), (5, 0, 0.45), (-10, 5, 0.55)]


def _photo(yaw: float, pitch: float, exposure: float):
    from services.filter.analysis import _Photo

    out = internal_pb2.SelfieAnalysis(exposure=exposure)
    out.pose.yaw, out.pose.pitch = yaw, pitch
    return _Photo("x", out)


def test_head_turns_are_advice_and_a_profile_does_not_count() -> None:
    """A turned head is told, not refused; a full profile stays but is not counted toward
    the photos an order needs. (The set has no real profile photo: the profile here is a
    real photo whose landmarks are moved to a profile's geometry, nose past the eyes.)"""
    from services.filter.analysis import landmark_asymmetry

    a = analyzer()
    names = photos("obama")[:4]
    analysed = a.analyze_photos([(n, raw(n)) for n in names])
    for p in analysed:  # real photos, none a profile
        assert landmark_asymmetry(np.asarray(p.out.faces[0].landmarks).reshape(5, 2)) < 0.6
    frontal = np.asarray(analysed[0].out.faces[0].landmarks).reshape(5, 2)
    profile = frontal.copy()
    profile[2, 0] = profile[1, 0] + 0.2 * (profile[1, 0] - profile[0, 0])  # nose past an eye
    assert landmark_asymmetry(profile) > 1.0

    analysed[1].out.ClearField("findings")
    a._pose(analysed[1], yaw=38.0, landmarks=frontal)
    analysed[2].out.ClearField("findings")
    a._pose(analysed[2], yaw=25.0, landmarks=profile)
    response = a.judge(analysed)
    by_id = {p.photo_id: p for p in response.photos}
    turned = next(f for f in by_id[names[1]].findings if f.code == "TURNED_AWAY")
    assert not turned.blocking and "38 degrees" in turned.message
    side = next(f for f in by_id[names[2]].findings if f.code == "PROFILE")
    assert not side.blocking and "not counted" in side.message
    assert by_id[names[1]].usable and by_id[names[2]].usable
    assert response.set.usable_count == len([p for p in response.photos if p.usable]) - 1


def test_eyes_that_differ_are_advice_on_a_selfie_and_closed_eyes_refuse_it() -> None:
    """A real person's eyes may differ (a squint, two iris colours): the photo stays usable
    with the finding as advice. Shut eyes would teach the model shut eyes: refused."""
    good = render_512("obama/obama-briefing-room.jpg")
    m = face_stack().check_selfie(good).mesh
    assert m is not None
    apart = shift_iris(shift_iris(good, m.eye_image_left, -0.3), m.eye_image_right, 0.3)
    response = analyzer().analyze([("apart", png(apart))])
    [verdict] = response.photos
    [finding] = [f for f in verdict.findings if f.code == "EYES_INCONSISTENT"]
    assert not finding.blocking and verdict.usable
    assert "keep the photo" in finding.message


def test_partial_faces_and_a_faceless_image_are_not_usable() -> None:
    names = photos("partial")
    blank = png(np.full((400, 300, 3), 200, np.uint8))
    response = analyzer().analyze([(n, raw(n)) for n in names] + [("blank", blank)])
    for p in response.photos[:2]:
        assert not p.usable and "PARTIAL_FACE" in codes(p)
    assert not response.photos[2].usable and codes(response.photos[2]) == {"NO_FACE"}
    assert response.set.usable_count == 0 and not response.set.reference_embedding


def cmyk_jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(photo("obama/obama-briefing-room.jpg")).convert("CMYK").save(out, "JPEG")
    return out.getvalue()


def png_16bit() -> bytes:
    grey = np.asarray(Image.fromarray(photo("obama/obama-briefing-room.jpg")).convert("L"))
    out = io.BytesIO()
    Image.fromarray(grey.astype(np.uint16) * 257).save(out, "PNG")
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_bad_input_gets_a_reason_per_photo_and_the_rest_is_judged() -> None:
    good = "obama/obama-briefing-room.jpg"
    items = [
        ("corrupt", raw(good)[:2000]),
        ("tiny", png(np.zeros((1, 1, 3), np.uint8))),
        ("bomb", png_header(20000, 20000)),
        ("text", b"not an image at all"),
        ("cmyk", cmyk_jpeg()),
        ("16bit", png_16bit()),
        ("grey", png(Image.fromarray(photo(good)).convert("L"))),
        ("good", raw(good)),
    ]
    response = analyzer().analyze(items)
    by_id = {p.photo_id: p for p in response.photos}
    assert codes(by_id["corrupt"]) == {"UNREADABLE"}
    assert codes(by_id["tiny"]) == {"TOO_SMALL"}
    assert codes(by_id["bomb"]) == {"TOO_MANY_PIXELS"}
    assert codes(by_id["text"]) == {"UNREADABLE"}
    for bad in ("corrupt", "tiny", "bomb", "text"):
        assert not by_id[bad].usable and by_id[bad].findings[0].message
    # Unusual but valid encodings of a real face are read as that face.
    for fine in ("cmyk", "16bit", "grey", "good"):
        assert len(by_id[fine].faces) == 1, fine


# ------------------------------------------------------------------ candidate scoring


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    names = photos("obama")[:3]
    response = analyzer().analyze([(n, raw(n)) for n in names])
    return np.asarray(response.set.reference_embedding, np.float32)


def test_good_renders_pass_and_strangers_fail_on_likeness(reference: np.ndarray) -> None:
    names = ["obama/obama-briefing-room.jpg", "obama/obama-president-bioguide.jpg"]
    strangers = ["biden/biden-vp-portrait.jpg", "others/020145.jpg"]
    verdicts = scorer().score([png(render_512(n)) for n in names + strangers], reference)
    for v in verdicts[:2]:
        assert v.passed, v.reasons
        assert v.scores["likeness"] > 0.9 and v.scores["quality"] > 0.7
        assert v.embedding is not None and v.embedding.shape == (128,)
    for v in verdicts[2:]:
        assert v.reasons == ["LOW_LIKENESS"]
        assert v.scores["likeness"] < 0.1


def test_each_defect_gets_its_reason(reference: np.ndarray) -> None:
    good = render_512("obama/obama-briefing-room.jpg")
    check = face_stack().check_selfie(good)
    assert check.mesh is not None
    m = check.mesh
    drifting = shift_iris(shift_iris(good, m.eye_image_left, -0.3), m.eye_image_right, 0.3)
    blurred = np.asarray(Image.fromarray(good).filter(ImageFilter.GaussianBlur(6)))
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    small = np.full((512, 512, 3), 90, np.uint8)
    small[200:264, 220:284] = np.asarray(Image.fromarray(good).resize((64, 64)))
    cases = {
        "EYES_INCONSISTENT": drifting,
        "BLURRED": blurred,
        "NO_FACE": noise,
    }
    verdicts = scorer().score([png(img) for img in cases.values()], reference)
    for (reason, _img), v in zip(cases.items(), verdicts, strict=True):
        assert reason in v.reasons, (reason, v.reasons)
    assert verdicts[2].scores["likeness"] == 0.0 and verdicts[2].scores["quality"] == 0.0
    assert scorer().score([b"\x89PNG broken"], reference)[0].reasons == ["UNREADABLE"]


def test_a_quiet_hand_is_not_a_broken_hand(reference: np.ndarray) -> None:
    """A sure, ordinary hand at rest passes; the hand rule itself: test_filter_calibration."""
    rel = FIXTURES.parent / "filter-calibration" / "good" / "facechain-christmas.jpg"
    image = Image.open(rel).convert("RGB").resize((512, 512))
    assert face_stack().hands(np.asarray(image)), "the render shows a hand"
    v = scorer().score([png(image)], reference)[0]
    assert "BROKEN_HAND" not in v.reasons
    assert v.scores["hands"] == 1.0
