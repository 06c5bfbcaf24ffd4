"""The candidate filter on its calibration set: the recall and false-reject rates it was
tuned to, held with a margin, and verdicts that do not depend on the batch.

The whole set (~220 images through the real scorer) takes minutes on 2 shared cores, so
those tests are marked slow. The floors are the rates measured when the thresholds were
set (bench/RESULTS.md, row "filter calibration"), less a margin of about one image per
label. A threshold change that loses more than that margin fails here.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache

import numpy as np
import pytest
from PIL import Image

from services.faces.face_stack import Face
from services.faces.geometry import resize
from services.faces.hand_check import HandThresholds, finger_spread_deg, judge_hands
from services.faces.hands import Hand
from services.faces.identity import IdentityModel
from services.faces.image_io import decode_image
from services.filter.scoring import CandidateScorer
from tests.support.face_stack import built_models, face_stack
from tests.support.filter_calibration import (
    CALIBRATION,
    Outcome,
    hand_rule_costs,
    manifest,
    rates,
    run,
)

# label → least share caught (for `good`: least share passed clean).
FLOORS = {
    "eyes_closed": 0.87,  # measured 22/24 (92 %); target 90 %
    "wink": 0.95,  # measured 24/24; target 80 %
    # measured 17/24 (71 %) with the pixel smudge and vertical-parting rules; target 70 %;
    # before them 11/24. The floor allows one image less (16/24 = 0.667).
    "gaze_iris": 0.66,
    # measured 12/23 (52 %; BROKEN_HAND on 4 of the 5 real renders, the fifth refused for its
    # eyes); target 80 %: NOT met (tests/fixtures/filter-calibration/README.md says why the
    # finger edits are a weak test; hand_check.py what pixel evidence was tried).
    "hand_malformed": 0.52,
    "partial": 1.0,  # measured 2/2
    "good": 0.96,  # measured 124/127 passed (2.4 % false rejects); target <= 5 %
}


@lru_cache(maxsize=1)
def calibration_scorer() -> CandidateScorer:
    identity = IdentityModel.load(built_models(), intra_op_threads=2, prefer_gpu=False)
    return CandidateScorer(face_stack(), identity)


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    return run(calibration_scorer(), manifest())


def test_the_manifest_names_a_source_and_licence_for_every_file() -> None:
    items = manifest()
    assert len(items) >= 200
    for item in items:
        assert item.path.is_file(), item.file
    on_disk = {str(p.relative_to(CALIBRATION)) for p in CALIBRATION.rglob("*.jpg") if p.is_file()}
    listed = {it.file for it in items if not it.file.startswith("faces/")}
    assert on_disk == listed, on_disk ^ listed
    with (CALIBRATION / "MANIFEST.csv").open() as f:
        for row in csv.DictReader(f):
            assert row["source"] and row["licence"], row["file"]
            assert "NC" not in row["licence"], row["file"]


@pytest.mark.slow
@pytest.mark.parametrize("label", list(FLOORS))
def test_each_reason_keeps_its_measured_rate(outcomes: list[Outcome], label: str) -> None:
    r = rates(outcomes)[label]
    assert r.n > 0
    missed = [o.item.file for o in outcomes if o.item.label == label and not o.caught]
    assert r.rate >= FLOORS[label], (label, f"{r.caught}/{r.n}", missed)


@pytest.mark.slow
def test_every_real_malformed_hand_render_is_caught(outcomes: list[Outcome]) -> None:
    real = [o for o in outcomes if o.item.label == "hand_malformed" and o.item.kind != "synthetic"]
    assert len(real) == 5
    seen = [(o.item.file, o.reasons) for o in real]
    # Every one is thrown away; since detection letterboxes each image on its own (issue 16)
    # one render (handrefiner-1) is refused for its eyes, no longer for its hand.
    assert all(o.reasons for o in real), seen
    assert sum("BROKEN_HAND" in o.reasons for o in real) >= 4, seen


@pytest.mark.slow
def test_what_the_hand_product_rule_costs_in_good_portraits() -> None:
    """The rule in use against its strict product form, on the good and broken-hand images.

    Measured: in use, 12/23 malformed hands caught (4/5 real) for 2/127 good portraits lost
    to BROKEN_HAND; "any visible hand rejects", 22/23 (5/5) for 12/127 (9.4 %), over the
    5 % budget: the set's good portraits with a hand are all well-formed hands.
    """
    in_use, strict = hand_rule_costs(face_stack(), manifest())
    assert in_use.good_lost <= 3, in_use
    assert in_use.real_caught >= 4, in_use
    assert strict.malformed_caught >= 21 and strict.real_caught == strict.real == 5, strict
    # The strict rule loses every good portrait that shows a hand: over the 5 % budget.
    assert strict.good_lost / strict.good > 0.05, strict


@pytest.mark.slow
def test_no_good_portrait_is_called_closed_eyed(outcomes: list[Outcome]) -> None:
    """Closed eyes are the costliest false alarm: a good face with open eyes never gets it."""
    wrong = [o.item.file for o in outcomes if o.item.label == "good" and "EYES_CLOSED" in o.reasons]
    assert wrong == []


def _png_sized(rel: str, size: tuple[int, int]) -> bytes:
    image = resize(decode_image((CALIBRATION / rel).read_bytes()), *size)
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return out.getvalue()


def _png512(rel: str) -> bytes:
    return _png_sized(rel, (512, 512))


def test_a_verdict_does_not_depend_on_the_rest_of_the_batch() -> None:
    """Same image alone and inside a batch of other sizes: same reasons, same scores.

    Depends on batch-invariant face detection (services/filter/face_detector.py letterboxes
    a batch onto one canvas sized for its largest image; owned by the detector work).
    """
    sc = calibration_scorer()
    target = _png512("synthetic/wink/facechain-cartoon.jpg")
    others = [
        _png_sized("good/facechain-armor.jpg", (900, 1300)),
        _png_sized("good/facechain-li.jpg", (300, 420)),
    ]
    alone = sc.score([target], None)[0]
    mixed = sc.score([others[0], target, others[1]], None)[1]
    assert alone.reasons == mixed.reasons
    assert set(alone.scores) == set(mixed.scores)
    for key, value in alone.scores.items():
        assert mixed.scores[key] == pytest.approx(value, abs=1e-3), key


# ------------------------------------------------------------------ the hand rule itself


def _hand(spread_deg: float, presence: float = 0.98, handedness: float = 0.97) -> Hand:
    """A flat hand, wrist at (100, 300), fingers up; index and pinky fanned by spread/2."""
    pts = np.zeros((21, 2), np.float32)
    pts[0] = (100, 300)
    for f, dx in enumerate((-30.0, -10.0, 10.0, 30.0)):
        knuckle = np.array([100 + dx, 220.0])
        angle = np.radians(-90 + (f - 1.5) / 1.5 * spread_deg / 2 * (1 if f in (0, 3) else 0.3))
        for j in range(4):
            pts[5 + 4 * f + j] = knuckle + 25 * j * np.array([np.cos(angle), np.sin(angle)])
    for j in range(4):
        pts[1 + j] = (60 - 10 * j, 280 - 15 * j)
    return Hand(np.array([60, 200, 140, 300], np.float32), 0.95, pts, presence, handedness)


def _face(height: float = 300.0) -> Face:
    lm = np.array([[80, 100], [140, 100], [110, 130], [85, 160], [135, 160]], np.float32)
    return Face(np.array([40, 20, 180, 20 + height], np.float32), 0.95, lm)


def test_a_quiet_sure_hand_passes_and_a_gesture_does_not() -> None:
    t = HandThresholds.load()
    quiet, gesture = _hand(4.0), _hand(60.0)
    assert finger_spread_deg(quiet.landmarks) < t.max_finger_spread_deg
    assert finger_spread_deg(gesture.landmarks) > t.max_finger_spread_deg
    assert judge_hands([quiet], _face(), t).well_formed
    verdict = judge_hands([gesture], _face(), t)
    assert not verdict.well_formed and "spread" in verdict.why


def test_doubtful_hands_count_against_the_candidate() -> None:
    t = HandThresholds.load()
    face = _face()
    assert not judge_hands([_hand(4.0, presence=0.6)], face, t).well_formed  # unsure
    assert not judge_hands([_hand(4.0, handedness=0.5)], face, t).well_formed  # which side?
    assert not judge_hands([_hand(4.0)], _face(height=60.0), t).well_formed  # face-sized hand
    two_right = [_hand(4.0, handedness=0.97), _hand(4.0, handedness=0.9)]
    assert judge_hands(two_right, face, t).why == "two hands of the same side"
    pair = [_hand(4.0, handedness=0.97), _hand(4.0, handedness=0.03)]
    assert judge_hands(pair, face, t).well_formed
    assert not judge_hands([*pair, _hand(4.0, handedness=0.03)], face, t).well_formed
    unreadable = Hand(np.zeros(4, np.float32), 0.9, np.zeros((21, 2), np.float32), 0.3, 0.5)
    assert not judge_hands([unreadable], face, t).well_formed
    # A palm the landmark model calls "no hand" (presence ~0) is the palm detector firing on
    # a face or a sleeve: nothing to judge.
    nothing = Hand(np.zeros(4, np.float32), 0.9, np.zeros((21, 2), np.float32), 0.01, 0.5)
    assert judge_hands([nothing], face, t).well_formed
