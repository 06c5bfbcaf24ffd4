"""Score generated candidates: the defects people complain about, then likeness.

For each image (the `jobs.filter` worker sends batches of up to `score_batch`):

- NO_FACE: no detection over `min_face_score`, or the landmark model does not see a face;
- MULTIPLE_FACES: a second face at least half the main one's size (a stranger in the shot);
- PARTIAL_FACE: the face runs off the frame; FACE_TOO_SMALL: not a headshot;
- BLURRED: Laplacian variance of the face chip under the selfie gate's minimum (the
  same rule: FaceStack.check_face);
- DISTORTED_FACE: the mesh's face presence is low, or one eye is malformed relative to the
  other beyond what the head turn explains (melted features, mismatched eyes);
- EYES_CLOSED: either eye shut or far narrower than the other (a wink), measured on the
  iris model's lids; EYES_INCONSISTENT: irises looking different ways, of different
  colours or at different heights in their eyes, or one eye smudged (services/faces/eyes.py;
  iris size is measured but no rule: a sideways glance changes it as much as a defect);
- BROKEN_HAND: a visible hand that is not confidently well-formed: unsure landmarks,
  spread or gesturing fingers, a hand as large as the face, extra hands, or a sure palm
  the landmark model cannot read (services/faces/hand_check.py: a product rule, since the
  landmark model fits a normal hand over a malformed one);
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

from services.faces.eyes import EyeThresholds
from services.faces.face_stack import FaceStack, Hand
from services.faces.hand_check import HandThresholds, judge_hands
from services.faces.identity import IdentityModel, likeness_to
from services.faces.image_io import ImageError, decode_image
from services.faces.parallel import ImagePool
from services.faces.quality import head_pose
from services.faces.thresholds import load_section
from services.filter.selection import SelectionConfig
from services.filter.worker import CandidateVerdict


@dataclass(frozen=True)
class CandidateThresholds:
    min_face_score: float = 0.5
    min_interocular_share: float = 0.06
    sharpness_full: float = 200.0
    min_face_geometry: float = 0.5
    min_eye_width_ratio: float = 0.35
    weight_sharpness: float = 0.4
    weight_face: float = 0.2
    weight_eyes: float = 0.2
    weight_geometry: float = 0.2

    @classmethod
    def load(cls, path: Path | None = None) -> CandidateThresholds:
        return load_section(cls, "candidates", path)


class CandidateScorer:
    def __init__(
        self,
        stack: FaceStack,
        identity: IdentityModel,
        *,
        thresholds: CandidateThresholds | None = None,
        selection: SelectionConfig | None = None,
        hands: HandThresholds | None = None,
        eyes: EyeThresholds | None = None,
        pool: ImagePool | None = None,
    ) -> None:
        self.stack = stack
        self.identity = identity
        self.t = thresholds or CandidateThresholds.load()
        self.sel = selection or SelectionConfig.load()
        self.hand_t = hands or HandThresholds.load()
        self.eye_t = eyes or EyeThresholds.load()
        self.pool = pool or ImagePool()

    def score(
        self, images: Sequence[bytes], reference: np.ndarray | None
    ) -> list[CandidateVerdict]:
        """One verdict per image, in order; parts of the batch side by side (`pool`)."""
        return self.pool.map_batch(lambda part: self._score(part, reference), images)

    def _score(
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
        # One image per detector call: a batched call letterboxes every image onto a canvas
        # sized for the batch's largest, so a verdict would depend on its batch-mates
        # (5 of 152 changed in mixed batches). Back to one call once detection is
        # batch-invariant.
        faces = [self.stack.detect([a])[0] for a in arrays]
        # Every palm, whatever the landmark model says: hand_check tells "no hand" (presence
        # ~0, the palm detector firing on faces and clothes) from "a hand nobody can read".
        self.stack.hand_detector.palm_threshold = self.hand_t.palm_score
        hands = self.stack.hand_detector.detect(arrays) if arrays else []
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
        verdict = judge_hands(hands, faces[0] if faces else None, self.hand_t)
        hand_part = verdict.score
        scores["hands"] = hand_part
        reasons: list[str] = []
        if not verdict.well_formed:
            reasons.append("BROKEN_HAND")
        if not faces:
            # Likeness is 0, not absent: a render without a face resembles nobody.
            scores["likeness"] = 0.0
            return CandidateVerdict(scores=scores, reasons=["NO_FACE", *reasons]), None
        main = faces[0]
        face = self.stack.check_face(image, faces, eyes=self.eye_t)
        mesh = face.mesh
        yaw, pitch, _roll = head_pose(mesh)
        left, right = mesh.eye_image_left, mesh.eye_image_right
        wide = max(left.width, right.width)
        eye_ratio = min(left.width, right.width) / wide if wide > 0 else 0.0
        geometry = float(np.clip(mesh.presence, 0.0, 1.0)) * min(
            1.0, eye_ratio / max(t.min_eye_width_ratio * 2, 1e-6)
        )
        eyes = face.eye_consistency
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
        # Cut as the selfies were (the reference is their centre): FaceStack.identity_chip.
        chip = self.stack.identity_chip(image, main)
        return CandidateVerdict(scores=scores, reasons=reasons), chip
