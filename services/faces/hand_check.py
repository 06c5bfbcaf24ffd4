"""Is a hand in a generated headshot confidently well-formed? If not, it counts against it.

The hand landmark model fits a normal 21-point hand over whatever it is shown: on Stable
Diffusion renders with six fingers or fused ones it still answers presence ~1.0 with five
tidy fingers, and its answer does not even wobble when the crop is turned, mirrored or
rescaled (measured on the calibration set: the same 0.04-0.3 palm lengths of jitter on
broken and on good hands). So a bone-length test on its points cannot see the defects.

The rule is therefore a product rule, not a defect detector: a headshot rarely needs a
hand, and the hands diffusion models get wrong are the articulated ones (gestures, spread
fingers, a hand thrust at the camera). A visible hand passes only when everything says it
is a quiet, ordinary hand:

- the landmark model is sure it is a hand (presence) and sure which hand (handedness);
- the fingers lie together (the angle between neighbouring fingers is small);
- it is not as large as the face (then it is the subject of the picture, not a detail);
- one person shows at most two hands, never two of the same side;
- a palm the palm detector is sure of, which the landmark model cannot read (presence in
  between "no hand" and "a hand"), is a hand-like shape nobody can vouch for.

Pixel evidence tried and not used (issue 14, second round; numbers on the calibration
set's 12 good portraits with a visible hand and its 23 malformed hands): skin not
explained by the fitted hand (a colour model sampled along the fitted bones, capsules
around them, the forearm and face left out) spans 0.005-1.10 of the hand's area on good
hands and 0.0-1.04 on malformed ones; skin-coloured pixels in a strip beside the index or
little finger (where a sixth finger would lie) score 0.02-0.89 on good hands and 0.00-0.91
on malformed ones. Using the landmark model as a probe (the fitted fingers painted out
with the surrounding colour, the crop run again: does a hand remain?) gives presence
0.004-0.98 on good hands and 0.018-0.98 on malformed ones. Skin on skin (clasped hands,
a hand on a neck or a pale dress) defeats a colour silhouette at these sizes, and the
landmark model sees a hand in any hand-coloured remainder, so none separates; a finger
count needs a shape model trained on malformed hands, which the project does not ship.

Any failure is BROKEN_HAND; `HandVerdict.score` is 1 for no hand or only well-formed hands
and falls towards 0 with the worst hand's evidence, for the quality score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.faces.face_detector import Face
from services.faces.hands import Hand
from services.faces.thresholds import load_section

# MediaPipe's 21-point hand: wrist 0; index, middle, ring, pinky knuckles 5/9/13/17 and
# tips 8/12/16/20.
WRIST = 0
KNUCKLES = (5, 9, 13, 17)
TIPS = (8, 12, 16, 20)


@dataclass(frozen=True)
class HandThresholds:
    """Hand rules; values and the numbers they came from are in thresholds.yaml `hands:`."""

    palm_score: float = 0.3
    visible_presence: float = 0.5
    sure_presence: float = 0.8
    min_handedness_certainty: float = 0.5
    max_finger_spread_deg: float = 20.0
    max_hand_to_face: float = 1.0
    ambiguous_palm_score: float = 0.8
    ambiguous_presence: float = 0.2
    max_hands: int = 2

    @classmethod
    def load(cls, path: Path | None = None) -> HandThresholds:
        return load_section(cls, "hands", path)


@dataclass(frozen=True)
class HandVerdict:
    well_formed: bool
    why: str  # the first rule that failed ("" when all passed or no hand)
    score: float  # 1 = no hand or only quiet, sure hands; towards 0 = doubtful hands
    visible: int  # hands the landmark model confirms


def finger_spread_deg(landmarks: np.ndarray) -> float:
    """Largest angle between neighbouring fingers (knuckle → tip), degrees."""
    p = np.asarray(landmarks, np.float64)
    d = p[list(TIPS)] - p[list(KNUCKLES)]
    a = np.arctan2(d[:, 1], d[:, 0])
    diff = np.abs((np.diff(a) + np.pi) % (2 * np.pi) - np.pi)
    return float(np.degrees(diff.max()))


def handedness_certainty(hand: Hand) -> float:
    return abs(2.0 * hand.handedness - 1.0)


def _hand_problem(hand: Hand, face: Face | None, t: HandThresholds) -> str:
    if hand.presence < t.sure_presence:
        return "the landmark model is unsure it is a hand"
    if handedness_certainty(hand) < t.min_handedness_certainty:
        return "neither a clear left nor a clear right hand"
    if finger_spread_deg(hand.landmarks) > t.max_finger_spread_deg:
        return "fingers spread or gesturing"
    if face is not None:
        extent = float(np.ptp(np.asarray(hand.landmarks, np.float64), axis=0).max())
        if extent > t.max_hand_to_face * face.height:
            return "a hand as large as the face"
    return ""


def judge_hands(hands: Sequence[Hand], face: Face | None, t: HandThresholds) -> HandVerdict:
    """All palms found in one image (any presence) and the main face, if any."""
    hands = [h for h in hands if h.palm_score >= t.palm_score]
    visible = [h for h in hands if h.presence >= t.visible_presence]
    ambiguous = [
        h
        for h in hands
        if h.palm_score >= t.ambiguous_palm_score
        and t.ambiguous_presence <= h.presence < t.visible_presence
    ]
    if ambiguous:
        return HandVerdict(False, "a sure palm the landmark model cannot read", 0.2, len(visible))
    if len(visible) > t.max_hands:
        return HandVerdict(False, "more hands than one person has", 0.0, len(visible))
    sides = [
        h.handedness >= 0.5
        for h in visible
        if handedness_certainty(h) >= t.min_handedness_certainty
    ]
    if len(sides) != len(set(sides)):
        return HandVerdict(False, "two hands of the same side", 0.0, len(visible))
    for hand in visible:
        why = _hand_problem(hand, face, t)
        if why:
            return HandVerdict(False, why, 0.25, len(visible))
    return HandVerdict(True, "", 1.0, len(visible))
