"""Likeness of validation renders to the person's selfies (checkpoint choice).

EasyPhoto's method: every K training steps render a few images with the instance prompt and
fixed seeds, score how much the faces in them look like the selfies with a face-recognition
model, and keep the checkpoint that scores best rather than the last one (late checkpoints
overfit: same pose, same background, burnt colours).

Here: the shared face stack finds the face in each render, the identity model
(services/faces/identity.py, dlib's 128-d descriptor) embeds its aligned chip, and the
likeness is the filter's own 0..1 mapping of the distance to the person's identity centre.
A render without a face scores 0 (it is a failed render). Both models are imported lazily;
when they are missing the trainer falls back to choosing by validation loss and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LikenessScore:
    likeness: float  # mean over renders, 0 for a render without a face
    faces_found: int
    renders: int


class LikenessScorer:
    def __init__(self, face_stack: Any, identity: Any, reference: np.ndarray) -> None:
        self.face_stack = face_stack
        self.identity = identity
        self.reference = np.asarray(reference, dtype=np.float32)

    @classmethod
    def load(
        cls,
        face_models_dir: Path,
        *,
        reference_embedding: Sequence[float] = (),
        selfie_chips: Sequence[np.ndarray] = (),
    ) -> LikenessScorer | None:
        """The scorer, or None (with a logged warning) when the face stack or the identity
        model is not available, or there is nothing to compare with."""
        try:
            from services.faces.face_stack import FaceStack
            from services.faces.identity import IdentityModel, identity_centre
        except ImportError as err:
            log.warning(
                "identity model not importable (%r): checkpoints are chosen by validation loss",
                err,
            )
            return None
        try:
            stack = FaceStack.load(face_models_dir)
            identity = IdentityModel.load(face_models_dir)
        except (FileNotFoundError, OSError, ValueError) as err:
            log.warning(
                "face/identity models not loadable (%s): checkpoints are chosen by validation loss",
                err,
            )
            return None
        if len(reference_embedding):
            reference = np.asarray(reference_embedding, dtype=np.float32)
        else:
            chips = [c for c in selfie_chips if c is not None]
            if not chips:
                log.warning("no likeness reference: checkpoints are chosen by validation loss")
                return None
            reference = identity_centre(identity.embed(np.stack(chips)))
        return cls(stack, identity, reference)

    def score(self, images: Sequence[np.ndarray]) -> LikenessScore:
        from services.faces.identity import likeness_to

        images = [np.ascontiguousarray(i, dtype=np.uint8) for i in images]
        if not images:
            return LikenessScore(0.0, 0, 0)
        found = self.face_stack.detect(images)
        chips, idx = [], []
        for i, (img, faces) in enumerate(zip(images, found, strict=True)):
            faces = [f for f in faces if f.score >= self.face_stack.thresholds.face_score]
            if faces:
                # Cut as the selfies behind the reference were (FaceStack.identity_chip).
                chips.append(self.face_stack.identity_chip(img, faces[0]))
                idx.append(i)
        scores = np.zeros(len(images), dtype=np.float64)
        if chips:
            emb = self.identity.embed(np.stack(chips))
            scores[idx] = likeness_to(emb, self.reference)
        return LikenessScore(float(scores.mean()), len(chips), len(images))
