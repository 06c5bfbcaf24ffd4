"""MediaPipe hands: palm detector + 21-point hand landmarks with a presence score.

Palm detection decodes 2016 SSD anchors (MediaPipe's palm graph: 192×192 input, strides
8/16/16/16, one aspect ratio, fixed anchor size, box as x/y/w/h then 7 keypoints, scaled by
192, sigmoid scores). Each palm becomes a rotated square hand crop (the wrist → middle
finger direction turned upright, 2.6× the palm box, shifted half a box towards the fingers,
as MediaPipe's palm-to-hand ROI does) on which the landmark model gives 21 points, a hand
presence probability and handedness. A palm whose crop has a low presence score is a
"mangled hand" signal for generated images.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import onnxruntime as ort

from services.faces.face_detector import nms
from services.faces.geometry import (
    apply_affine,
    invert_affine,
    letterbox_matrix,
    rotated_rect_transform,
    warp_affine,
)

PALM_SIZE = 192
HAND_SIZE = 224
STRIDES = (8, 16, 16, 16)
ROI_SCALE = 2.6
ROI_SHIFT_Y = -0.5
WRIST, MIDDLE_MCP = 0, 2  # palm keypoints used for the hand's rotation


@dataclass(frozen=True)
class Hand:
    palm_box: np.ndarray  # x1, y1, x2, y2 in image px
    palm_score: float
    landmarks: np.ndarray  # 21×2 image px (wrist first, MediaPipe's hand topology)
    presence: float  # landmark model's "this crop holds a hand" probability
    handedness: float  # probability the hand is a right hand


@lru_cache(maxsize=4)
def palm_anchors(size: int = PALM_SIZE) -> np.ndarray:
    """Anchor centres (N×2, normalised), in the order the palm model emits its rows."""
    centres: list[np.ndarray] = []
    i = 0
    while i < len(STRIDES):
        stride = STRIDES[i]
        per_cell = 0
        # Consecutive layers with one stride share a grid; each adds 2 anchors per cell
        # (aspect ratio 1 and the interpolated scale).
        while i < len(STRIDES) and STRIDES[i] == stride:
            per_cell += 2
            i += 1
        grid = -(-size // stride)
        ys, xs = np.mgrid[0:grid, 0:grid]
        cell = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(cell, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def decode_palms(
    regressors: np.ndarray, logits: np.ndarray, threshold: float, iou: float
) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """(box xyxy, score, 7×2 keypoints) in normalised canvas units, after NMS."""
    anchors = palm_anchors()
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1), -100, 100)))
    idx = np.nonzero(scores > threshold)[0]
    if idx.size == 0:
        return []
    r = regressors[idx] / PALM_SIZE
    a = anchors[idx]
    cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
    w, h = r[:, 2], r[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = r[:, 4:18].reshape(-1, 7, 2) + a[:, None, :]
    keep = nms(boxes, scores[idx], iou)
    return [(boxes[k], float(scores[idx][k]), kps[k]) for k in keep]


def hand_crop_matrix(box: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """Image → 224² hand crop, fingers up (MediaPipe's palm-detection-to-hand-ROI)."""
    w, h = box[2] - box[0], box[3] - box[1]
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    v = kps[MIDDLE_MCP] - kps[WRIST]
    angle = np.pi / 2 - np.arctan2(-v[1], v[0])
    angle = (angle + np.pi) % (2 * np.pi) - np.pi
    shift = ROI_SHIFT_Y * h
    centre = centre + np.array([-np.sin(angle) * shift, np.cos(angle) * shift])
    side = max(w, h) * ROI_SCALE
    return rotated_rect_transform((centre[0], centre[1]), side, float(angle), HAND_SIZE)


class HandDetector:
    def __init__(
        self,
        palm: ort.InferenceSession,
        landmark: ort.InferenceSession,
        *,
        palm_threshold: float = 0.5,
        iou_threshold: float = 0.3,
        max_hands: int = 4,
    ) -> None:
        self.palm = palm
        self.landmark = landmark
        self.palm_threshold = palm_threshold
        self.iou_threshold = iou_threshold
        self.max_hands = max_hands
        self._palm_in = palm.get_inputs()[0].name
        self._lm_in = landmark.get_inputs()[0].name

    def detect(self, images: list[np.ndarray]) -> list[list[Hand]]:
        if not images:
            return []
        mats = [letterbox_matrix(im.shape[0], im.shape[1], PALM_SIZE) for im in images]
        canv = [
            warp_affine(im, m, PALM_SIZE, PALM_SIZE) for im, m in zip(images, mats, strict=True)
        ]
        x = np.stack(canv).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        regs, logits = self.palm.run(None, {self._palm_in: x})
        palms: list[tuple[int, np.ndarray, float, np.ndarray]] = []
        for i, m in enumerate(mats):
            inv = invert_affine(m)
            found = decode_palms(regs[i], logits[i], self.palm_threshold, self.iou_threshold)
            for box, score, kps in found[: self.max_hands]:
                corners = apply_affine(inv, box.reshape(2, 2) * PALM_SIZE).reshape(4)
                palms.append((i, corners, score, apply_affine(inv, kps * PALM_SIZE)))
        results: list[list[Hand]] = [[] for _ in images]
        if not palms:
            return results
        hand_mats = [hand_crop_matrix(box, kps) for _, box, _, kps in palms]
        crops = [
            warp_affine(images[i], hm, HAND_SIZE, HAND_SIZE)
            for (i, *_), hm in zip(palms, hand_mats, strict=True)
        ]
        hx = np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        lms, presence, handedness, _world = self.landmark.run(None, {self._lm_in: hx})
        for k, ((i, box, score, _kps), hm) in enumerate(zip(palms, hand_mats, strict=True)):
            pts = apply_affine(invert_affine(hm), lms[k].reshape(21, 3)[:, :2])
            results[i].append(
                Hand(
                    palm_box=box.astype(np.float32),
                    palm_score=score,
                    landmarks=pts.astype(np.float32),
                    presence=float(presence[k].reshape(-1)[0]),
                    handedness=float(handedness[k].reshape(-1)[0]),
                )
            )
        return results
