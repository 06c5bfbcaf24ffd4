"""The identity evaluation set holds the figures the product promises (bench/identity_eval.py).

Real official portraits of 36 members of Congress taken a Congress apart, one person's 8
selfies, 40 people of the London set (mostly Black and Asian), Obama and Biden fixtures, 40
one-photo strangers and near-copies (tests/fixtures/identity/README.md); each
photo analysed alone by AnalyzeSelfies' per-photo half, uploads judged by its set half.
The numbers asserted are the issue's targets; bench/results/bench_identity.json has the
measured values.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from bench import identity_eval as ev
from services.faces.duplicates import load_duplicate_thresholds
from services.faces.identity import load_identity_thresholds
from services.filter.analysis import SelfieAnalyzer
from tests.support.face_stack import built_models

# ~400 photos through the whole per-photo path (about 60 s on 2 free cores); the limit is for
# a loaded machine.
pytestmark = pytest.mark.timeout(1800)


@lru_cache(maxsize=1)
def analyzer() -> SelfieAnalyzer:
    return SelfieAnalyzer.load(built_models(), intra_op_threads=2, prefer_gpu=False)


@lru_cache(maxsize=1)
def analysed() -> ev.Analysed:
    # One synthetic near-copy kind keeps the run short; the bench uses all three.
    return ev.analyse(analyzer(), ev.load_items(synthetic=("resize",)))


def test_every_file_has_a_source_a_licence_and_a_label() -> None:
    with (ev.IDENTITY / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    files = {p.name for p in (ev.IDENTITY / "photos").glob("*.jpg")}
    assert {Path(r["file"]).name for r in rows} == files
    for r in rows:
        assert r["source"].startswith("github:") and "git blob" in r["source"]
        # Licences that allow commercial use only (never NC).
        assert r["licence"].startswith(("public domain", "CC0", "CC-BY 4.0")), r["licence"]
        assert r["label"] and r["person"] and r["shot"]
    people = {r["person"] for r in rows}
    assert len(people) >= 70
    shots: dict[str, set[str]] = {}
    for r in rows:
        shots.setdefault(r["person"], set()).add(r["shot"])
    assert max(len(s) for s in shots.values()) >= 8  # 6-genuine uploads can be formed


def test_the_descriptor_separates_people_at_the_configured_limit() -> None:
    limit = load_identity_thresholds()["same_person_max_distance"]
    r = ev.pair_report(analysed(), limit)
    assert r["genuine_pairs"] >= 120 and r["impostor_pairs"] >= 20000
    # The targets are EER <= 2 %, FAR <= 1 %; measured 0.77 % and, at the limit of
    # 0.50, 0.10 % (132 genuine / 23,509 impostor pairs; 0.56 % at the former 0.58): the
    # floors hold what was measured, with a little room.
    assert r["eer"] <= 0.01
    assert r["far_at_threshold"] <= 0.003


def test_false_accepts_within_one_population_are_known() -> None:
    """Impostors of the person's own population are the hard case. With the dlib descriptor
    the London set's Black and East Asian faces are confused far more often than the
    target. At the former limit 0.58: Black 20.2 % of 312 pairs, East Asian 15.3 % of 144,
    West Asian 1.9 % of 162, White 0 % of 112; at 0.50 (thresholds.yaml has the sweep):
    Black 5.1 %, East Asian 2.1 %, West Asian and White 0 %. These floors stop it getting
    worse; issue 16 stays open on the Black pairs (no better licence-clean descriptor was
    found, bench/RESULTS.md)."""
    limit = load_identity_thresholds()["same_person_max_distance"]
    r = ev.population_report(analysed(), limit)
    assert set(r) == {"black", "east_asian", "west_asian", "white"}
    assert r["black"]["far_at_threshold"] <= 0.06
    assert r["east_asian"]["far_at_threshold"] <= 0.03
    assert r["west_asian"]["far_at_threshold"] <= 0.01
    assert r["white"]["far_at_threshold"] <= 0.01


def test_uploads_with_impostors_name_exactly_the_impostors() -> None:
    r = ev.upload_report(analyzer(), analysed(), impostor_sets=10)
    # 6+2 / 6+1: one person's 8 selfies, every choice of 6 (28), impostors from the other
    # 75 people (measured with 40 draws: 1,120 uploads each, all flagged exactly).
    assert r["6+2"]["uploads"] >= 280 and r["6+1"]["uploads"] >= 280
    for kind in ("6+2", "6+1", "5+2", "4+2"):
        assert r[kind]["flagged_exactly_rate"] >= 0.98, (kind, r[kind])
        assert r[kind]["impostors_missed"] == 0
    # Smaller uploads: impostors are caught; the other misses are genuine photos refused:
    # Biden's 1970s and 2013 portraits, 0.588 apart, which the descriptor does not link
    # (measured at 0.50 with 10 draws: 2+1 0.989, 3+2 0.91, 3+1 0.91).
    for kind in ("3+2", "3+1", "2+1"):
        assert r[kind]["impostors_missed"] <= 0.01 * r[kind]["uploads"], (kind, r[kind])
        assert r[kind]["flagged_exactly_rate"] >= 0.85, (kind, r[kind])
    # Lookalikes: a London-set person's 2 photos + 1 impostor of the same self-reported
    # population, the pairs the descriptor confuses most. At the former limit 0.58 50 of
    # 1,560 impostors were missed (40 draws); at 0.50 none of 400 (10 draws).
    same = r["2+1-same-population"]
    assert same["uploads"] >= 380
    assert same["impostors_missed"] <= 0.01 * same["uploads"], same
    assert same["flagged_exactly_rate"] >= 0.98, same
    assert r["genuine_uploads"]["other_person_rate"] <= 0.01
    assert r["genuine_uploads"]["duplicate_rate"] <= 0.01
    assert r["strangers_11"]["refused_rate"] == 1.0


def test_only_near_copies_are_duplicates() -> None:
    r = ev.duplicate_report(analysed(), load_duplicate_thresholds())
    assert r["different_shots_called_duplicate"] <= 0.01
    # Measured 0.71 (resize + jpeg copies): copies the source shrank to 175 px and mirrored
    # are mostly missed. Different shots: 1 of 130 (two of the selfies taken at 30 and 45 cm
    # seconds apart, detail correlation 0.94).
    assert r["near_copies_caught"] >= 0.5


def test_a_photo_gets_the_same_verdict_alone_and_in_a_mixed_batch() -> None:
    """Boxes, landmarks, descriptor and findings of a photo do not depend on the call."""
    items = ev.load_items(synthetic=())
    picks = [
        next(it for it in items if it.key == "obama-2012-portrait"),  # 1434 x 2333
        next(it for it in items if it.key == "obama-senate-bioguide"),  # 167 x 225
        next(it for it in items if it.key == "021502-shot2"),  # 480 x 600
        next(it for it in items if it.key == "biden-2010-blue-room"),
    ]
    an = analyzer()
    alone = [an.analyze_photos([(it.key, it.data())])[0] for it in picks]
    together = an.analyze_photos([(it.key, it.data()) for it in picks])
    for a, b in zip(alone, together, strict=True):
        assert len(a.out.faces) == len(b.out.faces) >= 1
        np.testing.assert_allclose(
            [a.out.faces[0].x, a.out.faces[0].y, a.out.faces[0].width],
            [b.out.faces[0].x, b.out.faces[0].y, b.out.faces[0].width],
            atol=0.05,
        )
        np.testing.assert_allclose(a.out.faces[0].landmarks, b.out.faces[0].landmarks, atol=0.05)
        assert a.embedding is not None and b.embedding is not None
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-4)
        assert [f.code for f in a.out.findings] == [f.code for f in b.out.findings]
        assert a.usable == b.usable


def soft_closeup() -> bytes:
    """A plain frontal portrait as a soft, low-contrast scan whose face fills the frame.

    Made from the Biden fixture portrait; it stands in for the scanned 1940s-60s
    Congressional portraits (not vendored: their copyright status is unclear) that the
    detector missed at full size and finds at 320 px (scores 0.8-0.93).
    """
    import io

    from PIL import Image, ImageEnhance, ImageFilter

    from services.faces.image_io import decode_image

    image = decode_image((ev.FACES / "biden" / "biden-vp-portrait.jpg").read_bytes())
    faces = analyzer().stack.detect([image])[0]
    x1, y1, x2, y2 = faces[0].box
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 1.2 / 2
    crop = Image.fromarray(image).crop(
        (int(cx - half), int(cy - half * 1.25), int(cx + half), int(cy + half * 1.25))
    )
    crop = crop.resize((480, 600), Image.Resampling.LANCZOS).convert("L")
    crop = ImageEnhance.Contrast(crop).enhance(0.5).filter(ImageFilter.GaussianBlur(6))
    out = io.BytesIO()
    crop.convert("RGB").save(out, "PNG")
    return out.getvalue()


def test_a_soft_close_up_portrait_is_found() -> None:
    """CenterFace misses big, soft faces at full size; the detector's 320-px pass finds it."""
    from services.faces.face_detector import FaceDetector
    from services.faces.image_io import decode_image

    image = decode_image(soft_closeup())
    detector = analyzer().stack.detector
    full_size_only = FaceDetector(detector.session, coarse=detector.canvas)
    assert full_size_only.detect([image]) == [[]]
    found = detector.detect([image])[0]
    assert len(found) == 1 and found[0].score >= detector.threshold
    result = analyzer().analyze_photos([("closeup", soft_closeup())])[0]
    assert "NO_FACE" not in [f.code for f in result.out.findings]


def test_frontal_photos_get_no_head_turn_advice() -> None:
    """None of the set's real photos (frontal: |yaw| at most 18 degrees) is told it is turned
    away or a profile (thresholds.yaml `selfies:`; profiles themselves are not in the set)."""
    a = analysed()
    told = [
        (it.key, f.code)
        for it, p in zip(a.items, a.photos, strict=True)
        for f in p.out.findings
        if not it.synthetic and f.code in ("TURNED_AWAY", "PROFILE")
    ]
    assert told == []
    yaws = [abs(p.out.pose.yaw) for it, p in zip(a.items, a.photos, strict=True) if p.out.faces]
    assert len(yaws) >= 300 and max(yaws) < 20.0
