"""FaceStack: the filter's one entry point to the ONNX face models.

    stack = FaceStack.load(Path("var/models/face"))
    faces = stack.detect([rgb, ...])          # list per image of Face (box, score, 5 points)
    mesh = stack.landmarks(rgb, faces[0][0])  # 468 points, irises, eye openness, gaze
    hands = stack.hands(rgb)                  # palms + 21 points + presence
    chip = stack.identity_chip(rgb, faces[0][0])  # the identity descriptor's 150x150 chip
    check = stack.check_selfie(rgb)           # reason codes for an upload

Sessions come from `onnx_runtime.create_session` (CUDA when present). Identity is added by
the descriptor module beside this one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.faces.eyes import EyeFinding, EyeThresholds, eye_finding
from services.faces.face_detector import Face, FaceDetector
from services.faces.face_mesh import FaceMesh, Mesh
from services.faces.hands import Hand, HandDetector
from services.faces.identity_align import identity_chip
from services.faces.onnx_runtime import create_session
from services.faces.quality import align_chip, exposure, head_pose, sharpness

__all__ = [
    "Face",
    "FaceChecks",
    "FaceStack",
    "Hand",
    "Mesh",
    "SelfieCheck",
    "Thresholds",
    "align_chip",
]

MODEL_FILES = {
    "centerface": "centerface.onnx",
    "face_landmark": "face_landmark.onnx",
    "iris_landmark": "iris_landmark.onnx",
    "palm_detection": "palm_detection.onnx",
    "hand_landmark": "hand_landmark.onnx",
}


@dataclass(frozen=True)
class Thresholds:
    """Gates for a usable selfie; measured on the fixture photos (see tests)."""

    face_score: float = 0.5
    # Interocular distance in pixels below which the face is too small to train on.
    min_interocular_px: float = 20.0
    # Share of the face oval outside the frame; the fixtures' whole faces are 0.0, the
    # half-cut ones ≥ 0.25.
    max_outside: float = 0.05
    min_mesh_presence: float = 0.5
    # Eye rules (open, shut, gaze, irises): thresholds.yaml `eyes:` (services/faces/eyes.py).
    # Hand landmark presence at or over this on a detected palm = a visible hand.
    hand_presence: float = 0.5
    palm_score: float = 0.3
    min_sharpness: float = 15.0


@dataclass
class SelfieCheck:
    faces: list[Face]
    mesh: Mesh | None = None
    hands: list[Hand] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    sharpness: float = 0.0
    exposure: float = 0.0
    pose: tuple[float, float, float] = (0.0, 0.0, 0.0)

    # Findings that do not by themselves make a selfie unusable.
    ADVISORY = frozenset({"HAND_VISIBLE"})

    @property
    def usable(self) -> bool:
        return not [r for r in self.reasons if r not in self.ADVISORY]


@dataclass(frozen=True)
class FaceChecks:
    """The rules on one detected face that selfies and generated candidates share.

    Each caller adds its own size rule (pixels for a selfie, a share of the frame for a
    headshot) and, for candidates, DISTORTED_FACE; `reasons` keeps one order for both.
    """

    mesh: Mesh
    sharpness: float
    multiple_faces: bool
    no_face: bool  # the landmark model does not see a face where the detector did
    partial: bool
    blurred: bool
    eyes: str | None  # EYES_CLOSED, EYES_INCONSISTENT or None
    eye: EyeFinding | None = None  # the measures behind `eyes`

    @property
    def eye_consistency(self) -> float:
        """1 when the eyes agree, towards 0 as gaze, iris colour or size drift apart."""
        if self.eye is None:
            return 1.0
        return self.eye.consistency

    def reasons(self, *, too_small: bool, distorted: bool = False) -> list[str]:
        out = []
        if self.multiple_faces:
            out.append("MULTIPLE_FACES")
        if self.no_face:
            out.append("NO_FACE")
        elif distorted:
            out.append("DISTORTED_FACE")
        if self.partial:
            out.append("PARTIAL_FACE")
        if too_small:
            out.append("FACE_TOO_SMALL")
        if self.blurred:
            out.append("BLURRED")
        if self.eyes:
            out.append(self.eyes)
        return out


class FaceStack:
    def __init__(self, detector: FaceDetector, mesh: FaceMesh, hands: HandDetector) -> None:
        self.detector = detector
        self.mesh = mesh
        self.hand_detector = hands
        self.thresholds = Thresholds()
        self.eye_thresholds = EyeThresholds.load()

    @classmethod
    def load(
        cls, models_dir: Path | str, *, intra_op_threads: int = 0, prefer_gpu: bool = True
    ) -> FaceStack:
        models_dir = Path(models_dir)
        missing = [f for f in MODEL_FILES.values() if not (models_dir / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"face models missing in {models_dir}: {', '.join(missing)} (run `make models`)"
            )
        if (models_dir / "manifest.json").is_file():
            json.loads((models_dir / "manifest.json").read_text())  # fail early if corrupt

        def session(name: str):
            return create_session(
                models_dir / MODEL_FILES[name],
                intra_op_threads=intra_op_threads,
                prefer_gpu=prefer_gpu,
            )

        return cls(
            FaceDetector(session("centerface")),
            FaceMesh(session("face_landmark"), session("iris_landmark")),
            HandDetector(session("palm_detection"), session("hand_landmark")),
        )

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        return self.detector.detect(images)

    def landmarks(self, image: np.ndarray, face: Face) -> Mesh:
        return self.mesh.run(image, [face])[0]

    def meshes(self, image: np.ndarray, faces: Sequence[Face]) -> list[Mesh]:
        return self.mesh.run(image, faces)

    def hands(self, image: np.ndarray) -> list[Hand]:
        return self.hands_batch([image])[0]

    def hands_batch(self, images: Sequence[np.ndarray]) -> list[list[Hand]]:
        t = self.thresholds
        self.hand_detector.palm_threshold = t.palm_score
        found = self.hand_detector.detect(list(images))
        return [[h for h in hs if h.presence >= t.hand_presence] for hs in found]

    align_chip = staticmethod(align_chip)

    def identity_chip(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The identity descriptor's chip (identity_align.identity_chip): selfies, candidates
        and the trainer's renders are all cut this way, so their distances compare."""
        return identity_chip(self.detector, image, face)

    def check_selfie(self, image: np.ndarray, faces: list[Face] | None = None) -> SelfieCheck:
        """Reason codes (PhotoFinding vocabulary) for one decoded upload."""
        t = self.thresholds
        if faces is None:
            faces = self.detect([image])[0]
        faces = [f for f in faces if f.score >= t.face_score]
        check = SelfieCheck(faces=faces, hands=self.hands(image))
        if check.hands:
            check.reasons.append("HAND_VISIBLE")
        if not faces:
            check.reasons.append("NO_FACE")
            return check
        main = faces[0]
        face = self.check_face(image, faces)
        check.mesh = face.mesh
        check.sharpness = face.sharpness
        check.exposure = exposure(image, main.landmarks)
        check.pose = head_pose(face.mesh)
        check.reasons += face.reasons(too_small=main.interocular < t.min_interocular_px)
        return check

    def check_face(
        self, image: np.ndarray, faces: Sequence[Face], *, eyes: EyeThresholds | None = None
    ) -> FaceChecks:
        """The shared rules on `faces[0]` (faces already filtered by score, main first)."""
        t = self.thresholds
        main = faces[0]
        mesh = self.landmarks(image, main)
        sharp = sharpness(image, main.landmarks)
        finding = eye_finding(mesh, eyes or self.eye_thresholds)
        return FaceChecks(
            mesh=mesh,
            sharpness=sharp,
            # A second face at least half the size of the main one is another person.
            multiple_faces=any(
                f.width * f.height >= 0.25 * main.width * main.height for f in faces[1:]
            ),
            no_face=mesh.presence < t.min_mesh_presence,
            partial=mesh.outside_fraction > t.max_outside or main.visible < 0.98,
            blurred=sharp < t.min_sharpness,
            eyes=finding.reason,
            eye=finding,
        )
