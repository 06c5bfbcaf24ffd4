"""MediaPipe face mesh (468 points) and iris landmarks on faces found by CenterFace.

The face crop follows MediaPipe's recipe: a square around the detection, rotated so the eyes
are level, resized to 192×192. Each eye is then cropped from the full-resolution image
around its two mesh corners (2.3× the corner distance, MediaPipe's iris ROI scale), 64×64;
the iris model was trained on the image-left eye, so the image-right eye is mirrored in and
out. Mesh indices used here are those of MediaPipe's canonical face mesh (facts from its
published topology: eye corners 33/133 and 362/263, lids 159/145 and 386/374, face oval).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from services.faces.face_detector import Face
from services.faces.geometry import (
    apply_affine,
    invert_affine,
    rotated_rect_transform,
    warp_affine,
)

MESH_SIZE = 192
IRIS_SIZE = 64
# Detection box → mesh crop side; CenterFace boxes run from brow to chin, so a little
# less than MediaPipe's 1.5 (which it uses on its own tighter detector boxes).
ROI_SCALE = 1.45
EYE_ROI_SCALE = 2.3

# Image-left eye (the person's right): outer corner 33, inner 133, upper lid 159, lower 145.
# Image-right eye (the person's left): inner corner 362, outer 263, upper 386, lower 374.
EYE_IMAGE_LEFT = {"a": 33, "b": 133, "upper": 159, "lower": 145}
EYE_IMAGE_RIGHT = {"a": 362, "b": 263, "upper": 386, "lower": 374}
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
    377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
# The iris model's 71 contour points start with the 16 points of the eye outline.
EYE_OUTLINE_POINTS = 16
NOSE_TIP, CHIN, FOREHEAD, CHEEK_IMAGE_LEFT, CHEEK_IMAGE_RIGHT = 1, 152, 10, 234, 454


@dataclass(frozen=True)
class EyeState:
    """One eye. Corners run image-left → image-right, so both eyes share one frame."""

    corners: np.ndarray  # 2×2: image-left corner, image-right corner
    iris: np.ndarray  # 5×2: iris centre then 4 contour points (image px)
    # Lid gap / corner distance; ~0.25-0.35 open, < 0.1 closed.
    openness: float
    # Iris centre along the corner axis (0 = image-left corner, 1 = image-right corner)
    # and across it (in eye widths, + = down). Both eyes looking the same way agree.
    gaze: np.ndarray  # (along, across)
    # The iris model's own view of the eye, for the lid and iris measures of `eyes.py`: its
    # 64² crop (the eye level, image-right eye mirrored so both look like an image-left eye),
    # the 71 contour points and 5 iris points in that crop, and the image → crop matrix.
    crop: np.ndarray | None = None
    crop_contour: np.ndarray | None = None
    crop_iris: np.ndarray | None = None
    crop_matrix: np.ndarray | None = None

    @property
    def width(self) -> float:
        return float(np.linalg.norm(self.corners[1] - self.corners[0]))


@dataclass(frozen=True)
class Mesh:
    points: np.ndarray  # 468×3, x/y in image px, z in the same scale (relative depth)
    presence: float  # face-presence probability from the mesh model
    eye_image_left: EyeState
    eye_image_right: EyeState
    # Share of face-oval points that fall outside the photo (a face cut by the frame).
    outside_fraction: float

    @property
    def gaze_disagreement(self) -> float:
        """How differently the two irises sit in their eyes (eye widths; ~0 when aligned)."""
        return float(np.linalg.norm(self.eye_image_left.gaze - self.eye_image_right.gaze))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def face_roi(face: Face) -> tuple[np.ndarray, float, float]:
    """Centre, side and angle of the square mesh crop for a detection."""
    le, re = face.landmarks[0], face.landmarks[1]
    angle = float(np.arctan2(re[1] - le[1], re[0] - le[0]))
    center = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
    side = max(face.width, face.height) * ROI_SCALE
    return center, side, angle


def _eye_matrix(a: np.ndarray, b: np.ndarray, mirror: bool) -> np.ndarray:
    center = (a + b) / 2
    side = float(np.linalg.norm(b - a)) * EYE_ROI_SCALE
    angle = float(np.arctan2(b[1] - a[1], b[0] - a[0]))
    m = rotated_rect_transform((center[0], center[1]), max(side, 1.0), angle, IRIS_SIZE)
    if mirror:
        flip = np.array([[-1.0, 0, IRIS_SIZE], [0, 1.0, 0], [0, 0, 1.0]])
        m = (flip @ np.vstack([m, [0, 0, 1]]))[:2]
    return m


def _gaze_in_crop(contour: np.ndarray, iris_crop: np.ndarray, mirrored: bool) -> np.ndarray:
    """Iris centre within the eye outline found by the iris model in its own crop.

    The crop's x axis runs along the eye, so the outline's extent in x gives both corners as
    the iris model sees them: sharper than the mesh corners, which come from a 192² face crop.
    """
    outline = contour[:EYE_OUTLINE_POINTS]
    x0, x1 = outline[:, 0].min(), outline[:, 0].max()
    width = max(x1 - x0, 1e-6)
    along = (iris_crop[0] - x0) / width
    across = (iris_crop[1] - (outline[:, 1].min() + outline[:, 1].max()) / 2) / width
    return np.array([1.0 - along if mirrored else along, across])


def _eye_state(
    points: np.ndarray,
    idx: dict[str, int],
    iris: np.ndarray,
    gaze: np.ndarray,
    **crop_view: np.ndarray,
) -> EyeState:
    a, b = points[idx["a"], :2], points[idx["b"], :2]
    axis = b - a
    width = float(np.linalg.norm(axis)) or 1.0
    unit = axis / width
    normal = np.array([-unit[1], unit[0]])  # points "down" when the eye line is level
    gap = float(np.dot(points[idx["lower"], :2] - points[idx["upper"], :2], normal))
    return EyeState(
        corners=np.stack([a, b]),
        iris=iris,
        openness=max(gap, 0.0) / width,
        gaze=gaze,
        **crop_view,
    )


class FaceMesh:
    def __init__(self, mesh: ort.InferenceSession, iris: ort.InferenceSession) -> None:
        self.mesh = mesh
        self.iris = iris
        self._mesh_in = mesh.get_inputs()[0].name
        self._iris_in = iris.get_inputs()[0].name

    def run(self, image: np.ndarray, faces: Sequence[Face]) -> list[Mesh]:
        """Mesh + irises for each face of one image, all faces in one batch per model."""
        if not faces:
            return []
        mats, crops = [], []
        for face in faces:
            center, side, angle = face_roi(face)
            m = rotated_rect_transform((center[0], center[1]), side, angle, MESH_SIZE)
            mats.append(m)
            crops.append(warp_affine(image, m, MESH_SIZE, MESH_SIZE))
        x = np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        raw, flag = self.mesh.run(None, {self._mesh_in: x})
        raw = raw.reshape(len(faces), 468, 3)
        presence = _sigmoid(flag.reshape(len(faces)))
        all_points = []
        eye_mats, eye_crops = [], []
        for i, m in enumerate(mats):
            pts = np.empty((468, 3))
            pts[:, :2] = apply_affine(invert_affine(m), raw[i, :, :2])
            pts[:, 2] = raw[i, :, 2] / np.sqrt(abs(np.linalg.det(m[:, :2])))
            all_points.append(pts)
            for idx, mirror in ((EYE_IMAGE_LEFT, False), (EYE_IMAGE_RIGHT, True)):
                em = _eye_matrix(pts[idx["a"], :2], pts[idx["b"], :2], mirror)
                eye_mats.append(em)
                eye_crops.append(warp_affine(image, em, IRIS_SIZE, IRIS_SIZE))
        ex = np.stack(eye_crops).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        contours, iris_raw = self.iris.run(None, {self._iris_in: ex})
        iris_raw = iris_raw.reshape(len(eye_crops), 5, 3)
        contours = contours.reshape(len(eye_crops), 71, 3)
        h, w = image.shape[:2]
        meshes = []
        for i, pts in enumerate(all_points):
            eyes = []
            for k, idx in enumerate((EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT)):
                em = eye_mats[2 * i + k]
                iris = apply_affine(invert_affine(em), iris_raw[2 * i + k, :, :2])
                j = 2 * i + k
                gaze = _gaze_in_crop(contours[j, :, :2], iris_raw[j, 0, :2], k == 1)
                eyes.append(
                    _eye_state(
                        pts,
                        idx,
                        iris,
                        gaze,
                        crop=eye_crops[j],
                        crop_contour=contours[j, :, :2].astype(np.float32),
                        crop_iris=iris_raw[j, :, :2].astype(np.float32),
                        crop_matrix=em,
                    )
                )
            oval = pts[list(FACE_OVAL), :2]
            margin = 0.02 * (pts[:, 0].max() - pts[:, 0].min())
            outside = (
                (oval[:, 0] < -margin)
                | (oval[:, 0] > w + margin)
                | (oval[:, 1] < -margin)
                | (oval[:, 1] > h + margin)
            )
            meshes.append(
                Mesh(
                    points=pts.astype(np.float32),
                    presence=float(presence[i]),
                    eye_image_left=eyes[0],
                    eye_image_right=eyes[1],
                    outside_fraction=float(outside.mean()),
                )
            )
        return meshes
