"""CenterFace face detection: boxes, scores and five landmarks, batched.

CenterFace (Xu et al., 2019, "CenterFace: Joint Face Detection and Alignment Using Face as
Point") predicts at stride 4: a centre heatmap, log-scale box size (height, width), centre
offset, and five landmarks relative to the box. The decoder below follows the paper: each
heatmap peak over the threshold is a face; its box is `exp(scale) * 4` around the refined
centre, its landmarks are box-relative.

Each image is letterboxed into its own canvas (its boxes never depend on the rest of the
call); images with canvases of one size share a session run.
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
    """CenterFace on onnxruntime. `detect` takes RGB uint8 images of any sizes.

    Each image is letterboxed on its own, so what is found in it never depends on the other
    images of the call; images whose canvases have the same size share a session run.

    Two passes per image: the image fitted to the smallest canvas that holds it (at most
    `canvas`), for small faces; and, when that canvas is larger than `coarse`, the image
    shrunk to `coarse`, for big ones. CenterFace misses faces much larger than those it was
    trained on: close-up portraits whose face spans ~400 px of a 600-px canvas score
    0.03-0.48 there and 0.8-0.93 at 320 px (measured on scanned Congressional portraits).
    The two passes' faces are merged by non-maximum suppression.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        canvas: int = 640,
        coarse: int = 320,
        threshold: float = 0.5,
        iou_threshold: float = 0.3,
        max_batch: int = 16,
    ) -> None:
        if canvas % 32 or coarse % 32:
            raise ValueError("canvas sizes must be multiples of 32")
        self.session = session
        self.canvas = canvas
        self.coarse = coarse
        self.threshold = threshold
        self.iou_threshold = iou_threshold
        self.max_batch = max_batch
        self._input = session.get_inputs()[0].name

    def canvas_for(self, image: np.ndarray) -> int:
        """Smallest multiple of 32 that holds the image, capped at `canvas`.

        Small photos are not blown up to the full canvas: the cost grows with its area.
        """
        longest = max(image.shape[:2])
        return int(min(self.canvas, max(128, -(-longest // 32) * 32)))

    def passes_for(self, image: np.ndarray) -> list[int]:
        fine = self.canvas_for(image)
        return [fine, self.coarse] if fine > self.coarse else [fine]

    @staticmethod
    def _prepare(image: np.ndarray, canvas: int) -> tuple[np.ndarray, np.ndarray]:
        m = letterbox_matrix(image.shape[0], image.shape[1], canvas)
        return warp_affine(image, m, canvas, canvas), m

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        if not images:
            return []
        # (image index, canvas size) jobs, grouped by canvas size: one run per group.
        jobs: dict[int, list[int]] = {}
        for i, im in enumerate(images):
            for size in self.passes_for(im):
                jobs.setdefault(size, []).append(i)
        found: list[list[tuple[np.ndarray, float, np.ndarray]]] = [[] for _ in images]
        for size, idx in sorted(jobs.items()):
            for start in range(0, len(idx), self.max_batch):
                part = idx[start : start + self.max_batch]
                prepared = [self._prepare(images[i], size) for i in part]
                # CenterFace takes RGB 0..255 as float, NCHW (no mean/std normalisation).
                batch = np.stack([c for c, _ in prepared]).astype(np.float32).transpose(0, 3, 1, 2)
                heat, scale, offset, lms = self.session.run(None, {self._input: batch})
                for k, (i, (_, m)) in enumerate(zip(part, prepared, strict=True)):
                    boxes, scores, points = decode(
                        heat[k], scale[k], offset[k], lms[k], self.threshold, self.iou_threshold
                    )
                    s, tx, ty = m[0, 0], m[0, 2], m[1, 2]
                    for box, score, pts in zip(boxes, scores, points, strict=True):
                        raw = (box - np.array([tx, ty, tx, ty])) / s
                        found[i].append((raw, float(score), (pts - np.array([tx, ty])) / s))
        return [self._faces(images[i], found[i]) for i in range(len(images))]

    def refine(self, image: np.ndarray, face: Face, size: int = 256) -> np.ndarray:
        """The face's five landmarks measured again on a crop at a fixed scale.

        On a large photo the detector sees the face shrunk 2-4x, and its stride-4 maps put
        landmarks 10-18 px apart between a photo and a re-crop of it (8-14 % of the eye
        distance). Detected again in a crop twice the face's size at `size` px, they move
        by about half that, whatever the photo's size or framing: the aligned chip, and so
        the descriptor and the duplicate check, depend on the face, not on the frame.
        Returns the original landmarks when the crop shows no face.
        """
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        s = size / (2.0 * max(face.width, face.height, 1.0))
        m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]])
        crop = warp_affine(image, m, size, size).astype(np.float32).transpose(2, 0, 1)[None]
        heat, scale, offset, lms = self.session.run(None, {self._input: crop})
        boxes, _, points = decode(
            heat[0], scale[0], offset[0], lms[0], self.threshold, self.iou_threshold
        )
        if not len(boxes):
            return face.landmarks
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        k = int(np.argmin(np.linalg.norm(centres - size / 2, axis=1)))
        return ((points[k] - m[:, 2]) / s).astype(np.float32)

    def _faces(
        self, image: np.ndarray, found: list[tuple[np.ndarray, float, np.ndarray]]
    ) -> list[Face]:
        if not found:
            return []
        boxes = np.stack([b for b, _, _ in found])
        scores = np.array([s for _, s, _ in found])
        h, w = image.shape[:2]
        faces = []
        for j in nms(boxes, scores, self.iou_threshold):
            raw, score, pts = found[j]
            # Boxes clipped to the frame; `visible` keeps how much of the face was inside.
            b = np.clip(raw, 0, [w, h, w, h]).astype(np.float32)
            area = max((raw[2] - raw[0]) * (raw[3] - raw[1]), 1e-6)
            visible = float((b[2] - b[0]) * (b[3] - b[1]) / area)
            faces.append(
                Face(box=b, score=score, landmarks=pts.astype(np.float32), visible=visible)
            )
        faces.sort(key=lambda f: -f.width * f.height)
        return faces
