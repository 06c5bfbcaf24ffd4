"""Image-quality measures on a face: sharpness, exposure, head pose, aligned chips."""

from __future__ import annotations

import numpy as np

from services.faces.face_mesh import (
    CHEEK_IMAGE_LEFT,
    CHEEK_IMAGE_RIGHT,
    CHIN,
    FOREHEAD,
    Mesh,
)
from services.faces.geometry import similarity_from_points, warp_affine

# Where the five landmarks sit in a tightly cropped, upright face, as fractions of the crop:
# the widely used 112×112 five-point template of the ArcFace/InsightFace recognisers.
FIVE_POINT_TEMPLATE = (
    np.array(
        [
            [38.2946, 51.6963],
            [73.5318, 51.5014],
            [56.0252, 71.7366],
            [41.5493, 92.3655],
            [70.7299, 92.2041],
        ]
    )
    / 112.0
)
QUALITY_CHIP = 128


def align_chip(
    image: np.ndarray, landmarks5: np.ndarray, size: int = 150, padding: float = 0.25
) -> np.ndarray:
    """Upright face chip size×size from the detector's 5 landmarks.

    `padding` widens the crop like dlib's get_face_chip: 0.25 adds a quarter of the tight
    face crop on every side (the tight crop then fills 1/1.5 of the chip).
    """
    target = (FIVE_POINT_TEMPLATE + padding) / (1 + 2 * padding) * size
    m = similarity_from_points(np.asarray(landmarks5, np.float64), target)
    return warp_affine(image, m, size, size)


def _gray(rgb: np.ndarray) -> np.ndarray:
    # ITU-R BT.601 luma weights.
    return rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low on blurred images (Pech-Pacheco et al.)."""
    g = gray.astype(np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def sharpness(image: np.ndarray, landmarks5: np.ndarray) -> float:
    """Laplacian variance on a 128² chip of the face, so photos of any size compare."""
    chip = align_chip(image, landmarks5, size=QUALITY_CHIP, padding=0.0)
    return laplacian_variance(_gray(chip))


def exposure(image: np.ndarray, landmarks5: np.ndarray) -> float:
    """Mean luminance of the face, 0..1."""
    chip = align_chip(image, landmarks5, size=64, padding=0.0)
    return float(_gray(chip).mean() / 255.0)


def head_pose(mesh: Mesh) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from the mesh's 3-D points; 0, 0, 0 = facing the camera.

    Yaw from the depth difference across the cheeks, pitch from forehead → chin, roll from
    the eye corners. An estimate, good to a few degrees for gating and variety scoring.
    """
    p = mesh.points.astype(np.float64)
    across = p[CHEEK_IMAGE_RIGHT] - p[CHEEK_IMAGE_LEFT]
    down = p[CHIN] - p[FOREHEAD]
    yaw = np.degrees(np.arctan2(across[2], across[0]))
    pitch = np.degrees(np.arctan2(-down[2], down[1]))
    eyes = mesh.eye_image_right.corners.mean(0) - mesh.eye_image_left.corners.mean(0)
    roll = np.degrees(np.arctan2(eyes[1], eyes[0]))
    return float(yaw), float(pitch), float(roll)
