"""Score generated candidates: the defects people complain about, then likeness.

For each image (the `jobs.filter` worker sends batches of up to `score_batch`):

- NO_FACE: no detection over `min_face_score`, or the landmark model does not see a face;
- MULTIPLE_FACES: a second face at least half the main one's size (a stranger in the shot);
- PARTIAL_FACE: the face runs off the frame; FACE_TOO_SMALL: not a headshot;
- BLURRED: Laplacian variance of the face chip under the selfie gate's minimum (the
  same rule: FaceStack.check_face);
- DISTORTED_FACE: the mesh's face presence is low, or one eye is malformed relative to the
  other beyond what the head turn explains (melted features, mismatched eyes);
- EYES_INCONSISTENT ("drifting eyes"): the irises sit differently in their eyes;
  EYES_CLOSED: lids shut;
- BROKEN_HAND: a hand the landmark model confirms whose finger bones have impossible
  lengths (a hand it does not recognise at all is not caught: see thresholds.yaml);
- LOW_LIKENESS / LOW_QUALITY: under the selection gates (so the rejection summary counts
  them like any other reason).

Scores (the `Scores` message): likeness (0..1 against the selfie centre), quality (a
weighted mean of sharpness, face confidence, eye consistency and face geometry, times the
hands score), each part, and yaw/pitch for the selection's variety. Every number is in
thresholds.yaml `candidates:` with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.faces.face_stack import FaceStack, Hand
from services.faces.identity import IdentityModel, likeness_to
from services.faces.identity_align import align_chip
from services.faces.image_io import ImageError, decode_image
from services.faces.quality import head_pose
from services.faces.thresholds import load_section
from services.filter.selection import SelectionConfig
from services.filter.worker import CandidateVerdict

# MediaPipe's 21-point hand: wrist 0, then four points per finger from thumb to pinky.
FINGER_BONES = [(b, b + 1) for f in range(5) for b in range(1 + 4 * f, 4 + 4 * f)]
WRIST, MIDDLE_MCP = 0, 9


@dataclass(frozen=True)
class CandidateThresholds:
    min_face_score: float = 0.5
    min_interocular_share: float = 0.06
    sharpness_full: float = 200.0
    min_face_geometry: float = 0.5
    min_eye_width_ratio: float = 0.35
    broken_hand_palm_score: float = 0.5
    broken_hand_presence: float = 0.5
    min_bone_share: float = 0.05
    max_bone_share: float = 1.2
    weight_sharpness: float = 0.4
    weight_face: float = 0.2
    weight_eyes: float = 0.2
    weight_geometry: float = 0.2

    @classmethod
    def load(cls, path: Path | None = None) -> CandidateThresholds:
        return load_section(cls, "candidates", path)


def hand_score(hand: Hand, t: CandidateThresholds) -> float:
    """1 = a well-formed hand, towards 0 = a mangled one (only palms worth judging)."""
    if hand.palm_score < t.broken_hand_palm_score:
        return 1.0
    pts = np.asarray(hand.landmarks, np.float64)
    palm = float(np.linalg.norm(pts[MIDDLE_MCP] - pts[WRIST]))
    if palm <= 1e-6:
        return 0.0
    bones = np.array([np.linalg.norm(pts[b] - pts[a]) for a, b in FINGER_BONES]) / palm
    if bones.min() < t.min_bone_share or bones.max() > t.max_bone_share:
        return min(hand.presence, 0.25)
    return float(np.clip(hand.presence, 0.0, 1.0))


class CandidateScorer:
    def __init__(
        self,
        stack: FaceStack,
        identity: IdentityModel,
        *,
        thresholds: CandidateThresholds | None = None,
        selection: SelectionConfig | None = None,
    ) -> None:
        self.stack = stack
        self.identity = identity
        self.t = thresholds or CandidateThresholds.load()
        self.sel = selection or SelectionConfig.load()

    def score(
        self, images: Sequence[bytes], reference: np.ndarray | None
    ) -> list[CandidateVerdict]:
        verdicts: list[CandidateVerdict | None] = [None] * len(images)
        decoded: list[tuple[int, np.ndarray]] = []
        for i, data in enumerate(images):
            try:
                decoded.append((i, decode_image(data)))
            except ImageError as err:
                verdicts[i] = CandidateVerdict(scores={"quality": 0.0}, reasons=[err.code])
        arrays = [a for _, a in decoded]
        faces = self.stack.detect(arrays) if arrays else []
        # Only palms the landmark model confirms as hands (presence >= 0.5). A palm without
        # that confirmation is no evidence of a mangled hand: the palm detector fires at
        # 0.5-0.9 on faces and clothes with presence ~0 in 20 of the 48 fixture photos, so
        # "sure palm, no hand" would reject good images. Confirmed hands are judged by
        # their finger geometry (hand_score).
        hands = self.stack.hands_batch(arrays) if arrays else []
        chips: list[np.ndarray] = []
        chip_of: list[int] = []
        for (i, image), found, hs in zip(decoded, faces, hands, strict=True):
            verdict, chip = self._judge(image, found, hs)
            verdicts[i] = verdict
            if chip is not None:
                chips.append(chip)
                chip_of.append(i)
        if chips:
            emb = self.identity.embed(np.stack(chips))
            like = likeness_to(emb, reference) if reference is not None else None
            for k, i in enumerate(chip_of):
                v = verdicts[i]
                assert v is not None
                v.embedding = emb[k]
                if like is not None:
                    v.scores["likeness"] = float(like[k])
                    if like[k] < self.sel.min_likeness:
                        v.reasons.append("LOW_LIKENESS")
        out = [v for v in verdicts if v is not None]
        assert len(out) == len(images)
        return out

    def _judge(
        self, image: np.ndarray, found: list[Any], hands: list[Hand]
    ) -> tuple[CandidateVerdict, np.ndarray | None]:
        t = self.t
        faces = [f for f in found if f.score >= t.min_face_score]
        best = max((float(f.score) for f in found), default=0.0)
        scores: dict[str, float] = {"face_confidence": best, "quality": 0.0}
        hand_part = min((hand_score(h, t) for h in hands), default=1.0)
        scores["hands"] = hand_part
        reasons: list[str] = []
        if hand_part < t.broken_hand_presence:
            reasons.append("BROKEN_HAND")
        if not faces:
            # Likeness is 0, not absent: a render without a face resembles nobody.
            scores["likeness"] = 0.0
            return CandidateVerdict(scores=scores, reasons=["NO_FACE", *reasons]), None
        main = faces[0]
        face = self.stack.check_face(image, faces)
        mesh = face.mesh
        yaw, pitch, _roll = head_pose(mesh)
        left, right = mesh.eye_image_left, mesh.eye_image_right
        wide = max(left.width, right.width)
        eye_ratio = min(left.width, right.width) / wide if wide > 0 else 0.0
        geometry = float(np.clip(mesh.presence, 0.0, 1.0)) * min(
            1.0, eye_ratio / max(t.min_eye_width_ratio * 2, 1e-6)
        )
        st = self.stack.thresholds
        eyes = float(np.clip(1.0 - mesh.gaze_disagreement / (2 * st.max_gaze_disagreement), 0, 1))
        sharp_part = min(1.0, math.log1p(face.sharpness) / math.log1p(t.sharpness_full))
        scores.update(
            sharpness=sharp_part,
            eye_consistency=eyes,
            face_geometry=geometry,
            yaw=yaw,
            pitch=pitch,
        )
        reasons += face.reasons(
            too_small=main.interocular < t.min_interocular_share * min(image.shape[:2]),
            distorted=geometry < t.min_face_geometry or eye_ratio < t.min_eye_width_ratio,
        )
        quality = hand_part * (
            t.weight_sharpness * sharp_part
            + t.weight_face * best
            + t.weight_eyes * eyes
            + t.weight_geometry * geometry
        )
        scores["quality"] = float(quality)
        if quality < self.sel.min_quality:
            reasons.append("LOW_QUALITY")
        return CandidateVerdict(scores=scores, reasons=reasons), align_chip(image, main.landmarks)
