"""CenterFace face detection: boxes, scores and five landmarks, batched.

CenterFace (Xu et al., 2019, "CenterFace: Joint Face Detection and Alignment Using Face as
Point") predicts at stride 4: a centre heatmap, log-scale box size (height, width), centre
offset, and five landmarks relative to the box. The decoder below follows the paper: each
heatmap peak over the threshold is a face; its box is `exp(scale) * 4` around the refined
centre, its landmarks are box-relative.

Images of any size are letterboxed into one square canvas so a batch is one session run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from services.faces.geometry import letterbox_matrix, warp_affine

STRIDE = 4


@dataclass(frozen=True)
class Face:
    """One face in image pixel coordinates."""

    box: np.ndarray  # x1, y1, x2, y2
    score: float
    # left eye, right eye, nose, left mouth corner, right mouth corner (as seen in the image:
    # "left" is the image-left one, i.e. the person's right eye)
    landmarks: np.ndarray  # 5×2
    # Share of the predicted box inside the frame: < 1 when the face runs off the photo.
    visible: float = 1.0

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def interocular(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    order = np.argsort(-scores)
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_threshold]
    return keep


def decode(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    landmarks: np.ndarray,
    threshold: float,
    iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw maps (C×H/4×W/4) → boxes N×4, scores N, landmarks N×5×2 (canvas px)."""
    ys, xs = np.nonzero(heatmap[0] > threshold)
    if ys.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2))
    h = np.exp(scale[0, ys, xs]) * STRIDE
    w = np.exp(scale[1, ys, xs]) * STRIDE
    cy = (ys + offset[0, ys, xs] + 0.5) * STRIDE
    cx = (xs + offset[1, ys, xs] + 0.5) * STRIDE
    x1, y1 = cx - w / 2, cy - h / 2
    boxes = np.stack([x1, y1, x1 + w, y1 + h], axis=1)
    scores = heatmap[0, ys, xs]
    # Landmark channels alternate (y, x) per point, scaled by the box size from its corner.
    lm_y = landmarks[0::2, ys, xs].T * h[:, None] + y1[:, None]
    lm_x = landmarks[1::2, ys, xs].T * w[:, None] + x1[:, None]
    points = np.stack([lm_x, lm_y], axis=2)
    keep = nms(boxes, scores, iou_threshold)
    return boxes[keep].astype(np.float32), scores[keep].astype(np.float32), points[keep]


class FaceDetector:
    """CenterFace on onnxruntime. `detect` takes RGB uint8 images of any sizes."""

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        canvas: int = 640,
        threshold: float = 0.5,
        iou_threshold: float = 0.3,
    ) -> None:
        if canvas % 32:
            raise ValueError("canvas must be a multiple of 32")
        self.session = session
        self.canvas = canvas
        self.threshold = threshold
        self.iou_threshold = iou_threshold
        self._input = session.get_inputs()[0].name

    def canvas_for(self, images: Sequence[np.ndarray]) -> int:
        """Smallest multiple of 32 that holds the largest image, capped at `canvas`.

        Small photos are not blown up to the full canvas: the cost grows with its area.
        """
        longest = max(max(im.shape[:2]) for im in images)
        return int(min(self.canvas, max(128, -(-longest // 32) * 32)))

    @staticmethod
    def _prepare(image: np.ndarray, canvas: int) -> tuple[np.ndarray, np.ndarray]:
        m = letterbox_matrix(image.shape[0], image.shape[1], canvas)
        return warp_affine(image, m, canvas, canvas), m

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        if not images:
            return []
        canvas = self.canvas_for(images)
        canvases, mats = zip(*(self._prepare(im, canvas) for im in images), strict=True)
        # CenterFace takes RGB 0..255 as float, NCHW (no mean/std normalisation).
        batch = np.stack(canvases).astype(np.float32).transpose(0, 3, 1, 2)
        heat, scale, offset, lms = self.session.run(None, {self._input: batch})
        results: list[list[Face]] = []
        for i, m in enumerate(mats):
            boxes, scores, points = decode(
                heat[i], scale[i], offset[i], lms[i], self.threshold, self.iou_threshold
            )
            s, tx, ty = m[0, 0], m[0, 2], m[1, 2]
            h, w = images[i].shape[:2]
            faces = []
            for box, score, pts in zip(boxes, scores, points, strict=True):
                # Back from canvas to image pixels; boxes clipped to the frame.
                raw = (box - np.array([tx, ty, tx, ty])) / s
                b = np.clip(raw, 0, [w, h, w, h]).astype(np.float32)
                area = max((raw[2] - raw[0]) * (raw[3] - raw[1]), 1e-6)
                visible = float((b[2] - b[0]) * (b[3] - b[1]) / area)
                p = ((pts - np.array([tx, ty])) / s).astype(np.float32)
                faces.append(Face(box=b, score=float(score), landmarks=p, visible=visible))
            faces.sort(key=lambda f: -f.width * f.height)
            results.append(faces)
        return results
