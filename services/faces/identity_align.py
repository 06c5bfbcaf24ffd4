"""Face chips for the identity descriptor: 150x150, aligned on five landmarks as dlib does.

The descriptor was trained on chips cut by dlib's `get_face_chip_details(shape, 150, 0.25)`:
a similarity transform that maps the face's landmarks onto dlib's mean face shape, with
25 % padding on each side. A chip cut any other way (other template, other padding) costs
accuracy, so the template here is dlib's, reduced to the five points CenterFace gives.

Template source: dlib/image_transforms/interpolation.h, `mean_face_shape_x/y` (the 68-point
mean shape, points 17..67, in a unit square). Five points derived from it:
- eye centres: mean of points 36-41 and 42-47 -> (0.225492, 0.215990), (0.754761, 0.215990)
- nose tip: point 30 -> (0.490127, 0.515625)
- mouth corners: points 48 and 54 -> (0.254149, 0.780233), (0.726104, 0.780233)
In chip pixels a unit point p lands at (p + padding) / (1 + 2 * padding) * size.

Landmark order (CenterFace's): image-left eye, image-right eye, nose, image-left mouth
corner, image-right mouth corner.

Every descriptor in the product (selfies, candidate likeness, the trainer's checkpoint
likeness and its reference) is cut by `identity_chip`: landmarks measured again on a
fixed-scale crop (`FaceDetector.refine`), then this template. A reference described one way
and renders described another would bias every likeness distance.
(`services.faces.quality.align_chip` is a different, unpadded warp for sharpness and
exposure; it is not for descriptors.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from services.faces.face_detector import Face, FaceDetector

CHIP_SIZE = 150
PADDING = 0.25

DLIB_TEMPLATE_5 = np.array(
    [
        [0.225492, 0.215990],
        [0.754761, 0.215990],
        [0.490127, 0.515625],
        [0.254149, 0.780233],
        [0.726104, 0.780233],
    ],
    dtype=np.float64,
)


class AlignmentError(ValueError):
    """Landmarks that cannot define a chip (wrong shape, not finite, degenerate)."""


def chip_points(size: int = CHIP_SIZE, padding: float = PADDING) -> np.ndarray:
    """The five template points in chip pixel coordinates."""
    return (DLIB_TEMPLATE_5 + padding) / (1 + 2 * padding) * size


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift) taking src onto dst.

    Umeyama (1991), without reflection.
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s < 1e-9:
        raise AlignmentError("landmarks collapse to one point")
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rot = u @ np.diag(sign) @ vt
    scale = float((sig * sign).sum() / var_s)
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift[:, None]])


def _check_landmarks(landmarks5: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks5, dtype=np.float64)
    if pts.shape != (5, 2):
        raise AlignmentError(f"need 5x2 landmarks, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise AlignmentError("landmarks are not finite")
    return pts


def chip_transform(
    landmarks5: np.ndarray, size: int = CHIP_SIZE, padding: float = PADDING
) -> np.ndarray:
    """2x3 matrix taking image pixels to chip pixels for these landmarks."""
    return similarity(_check_landmarks(landmarks5), chip_points(size, padding))


def align_chip(
    image: np.ndarray,
    landmarks5: np.ndarray,
    size: int = CHIP_SIZE,
    padding: float = PADDING,
) -> np.ndarray:
    """Cut the aligned size x size RGB uint8 chip from an HxWx3 uint8 image.

    Big faces are box-reduced by an integer factor before the bilinear warp, as dlib's chip
    extraction does with its pyramid: bilinear sampling alone at a 3x minification aliases
    hair and skin texture, which shifts the descriptor.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise AlignmentError(f"need an HxWx3 uint8 image, got {image.shape} {image.dtype}")
    m = chip_transform(landmarks5, size, padding)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    pil = Image.fromarray(image)
    factor = int(1.0 / scale) if scale > 0 else 1
    factor = max(1, min(factor, min(image.shape[:2]) // 2))
    if factor > 1:
        pil = pil.reduce(factor)
        # Reduced pixel j covers source pixels j*f .. j*f+f-1: its centre is j*f + (f-1)/2.
        to_src = np.array([[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2]])
        m = m @ np.vstack([to_src, [0, 0, 1]])
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    # `inv` works on pixel indices (centre of pixel i at i); PIL's affine works in continuous
    # coordinates (centre of pixel i at i + 0.5): convert so pixel centres line up.
    a, b, c = inv[0]
    d, e, f = inv[1]
    coeffs = (a, b, c - 0.5 * (a + b) + 0.5, d, e, f - 0.5 * (d + e) + 0.5)
    chip = pil.transform((size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    return np.asarray(chip, dtype=np.uint8)


def identity_chip(detector: FaceDetector, image: np.ndarray, face: Face) -> np.ndarray:
    """The descriptor's chip of `face` in `image`: the one way every caller cuts it.

    The detector's own landmarks move by 8-14 % of the eye distance with the photo's size
    and framing (its stride-4 maps see a large photo shrunk); refined on a crop at a fixed
    scale they depend on the face, so a selfie and a render of the same face are cut alike.
    """
    return align_chip(image, detector.refine(image, face))


def align_chips(
    images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray], size: int = CHIP_SIZE
) -> np.ndarray:
    """Chips for many faces, stacked N x size x size x 3 (empty input -> 0 x ...)."""
    if len(images) != len(landmarks):
        raise AlignmentError(f"{len(images)} images but {len(landmarks)} landmark sets")
    if not images:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack([align_chip(im, lm, size) for im, lm in zip(images, landmarks, strict=True)])
