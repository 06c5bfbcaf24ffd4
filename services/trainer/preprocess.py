"""Selfies -> face-aligned head-and-shoulders training crops at the model's resolution.

For each photo: decode safely (EXIF-upright, `services.faces.image_io`), run the shared face
stack's selfie check (one face, whole, big and sharp enough, eyes open), then cut a square
crop with a similarity transform that
- levels the eyes (rotation from the two eye landmarks),
- scales the face so the interocular distance is `face_scale` of the crop side (the
  eye-to-mouth distance stands in when the head is turned and the eyes look close together,
  as the FFHQ alignment does),
- puts the midpoint between the eyes on the centre column at row `eye_line` x side.
Every crop therefore has its eye line at the same row and the face in the same place, which
is what a LoRA learns fastest from. Where the head-and-shoulders crop would run off a tight
photo, the crop zooms in (up to 1.6x) before the photo is refused; what is still outside
is filled by repeating the border pixels (black bars would be learnt as part of the person).

Photos that cannot be used are dropped with a reason code (the PhotoFinding vocabulary of
the upload check) and a sentence. The face stack is imported lazily: it pulls onnxruntime.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from services.faces.face_stack import FaceStack

log = logging.getLogger(__name__)

# Tightest crop (as a share of the head-and-shoulders one) tried before a photo is refused.
MAX_ZOOM_IN = 1.6
# Eye-to-mouth distance of a frontal face relative to the interocular distance (the ratio
# FFHQ's alignment implies with its 2.0 x eye-to-eye vs 1.8 x eye-to-mouth), used to size
# turned heads whose eyes look close together.
EYE_TO_MOUTH_RATIO = 1.1

REASONS = {
    "NO_FACE": "no face was found in the photo",
    "MULTIPLE_FACES": "the photo shows more than one person",
    "PARTIAL_FACE": "the face is cut off by the edge of the photo",
    "FACE_TOO_SMALL": "the face is too small in the photo",
    "BLURRED": "the photo is blurred",
    "EYES_CLOSED": "the eyes are closed",
    "EYES_INCONSISTENT": "the eyes look in different directions",
    "CROP_OUTSIDE_PHOTO": "the face is too close to the edge for a head-and-shoulders crop",
}


@dataclass(frozen=True)
class CropGeometry:
    resolution: int
    eye_line: float = 0.40
    face_scale: float = 0.17
    max_upscale: float = 4.0
    max_outside: float = 0.30

    @property
    def eye_row(self) -> float:
        return self.eye_line * self.resolution


@dataclass
class Crop:
    name: str
    image: np.ndarray  # resolution x resolution x 3 uint8 RGB
    # The five landmarks mapped into the crop (eyes on `eye_row`).
    landmarks: np.ndarray
    # Output pixels per source pixel (> 1: the face was enlarged).
    upscale: float
    zoom: float = 1.0
    outside: float = 0.0
    # 150x150 identity chip cut from the full photo (likeness reference), when available.
    identity_chip: np.ndarray | None = None


@dataclass
class Rejection:
    name: str
    code: str
    message: str


@dataclass
class PreprocessResult:
    crops: list[Crop] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def summary(self) -> str:
        bad = "; ".join(f"{r.name}: {r.message}" for r in self.rejected)
        return f"{len(self.crops)} usable photo(s)" + (f"; dropped {bad}" if bad else "")


def crop_transform(landmarks5: np.ndarray, geo: CropGeometry, zoom: float = 1.0) -> np.ndarray:
    """2x3 matrix taking photo pixels to crop pixels (pixel centres at integer coords)."""
    pts = np.asarray(landmarks5, dtype=np.float64)
    left_eye, right_eye = pts[0], pts[1]
    eye_mid = (left_eye + right_eye) / 2
    mouth_mid = (pts[3] + pts[4]) / 2
    eye_vec = right_eye - left_eye
    iod = float(np.hypot(*eye_vec))
    e2m = float(np.hypot(*(mouth_mid - eye_mid)))
    size = max(iod, e2m / EYE_TO_MOUTH_RATIO)
    if not math.isfinite(size) or size < 1e-3:
        raise ValueError("degenerate landmarks")
    angle = math.atan2(eye_vec[1], eye_vec[0])
    scale = geo.face_scale * geo.resolution / size * zoom
    c, s = math.cos(-angle) * scale, math.sin(-angle) * scale
    rot = np.array([[c, -s], [s, c]])
    target = np.array([(geo.resolution - 1) / 2, geo.eye_row])
    return np.hstack([rot, (target - rot @ eye_mid)[:, None]])


def outside_fraction(m: np.ndarray, width: int, height: int, resolution: int) -> float:
    """Share of the crop's pixels whose source lies outside the photo (sampled on a grid)."""
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    n = 32
    g = (np.arange(n) + 0.5) / n * resolution
    xs, ys = np.meshgrid(g, g)
    pts = np.stack([xs.ravel(), ys.ravel()], 1) @ inv[:, :2].T + inv[:, 2]
    inside = (pts[:, 0] >= -0.5) & (pts[:, 0] <= width - 0.5)
    inside &= (pts[:, 1] >= -0.5) & (pts[:, 1] <= height - 0.5)
    return float(1.0 - inside.mean())


def warp_crop(image: np.ndarray, m: np.ndarray, resolution: int) -> np.ndarray:
    """Cut the crop: integer box-reduction first for big shrinks (bilinear alone aliases),
    border pixels repeated where the crop leaves the photo, then a bicubic affine warp."""
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    pil = Image.fromarray(image)
    factor = max(1, min(int(1.0 / scale) if scale > 0 else 1, min(image.shape[:2]) // 8))
    if factor > 1:
        pil = pil.reduce(factor)
        to_src = np.array([[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2]])
        m = m @ np.vstack([to_src, [0, 0, 1]])
    arr = np.asarray(pil)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    corners = np.array([[0, 0], [resolution, 0], [0, resolution], [resolution, resolution]])
    src = corners @ inv[:, :2].T + inv[:, 2]
    h, w = arr.shape[:2]
    pad_l = int(max(0, math.ceil(-src[:, 0].min()) + 2))
    pad_t = int(max(0, math.ceil(-src[:, 1].min()) + 2))
    pad_r = int(max(0, math.ceil(src[:, 0].max() - w) + 2))
    pad_b = int(max(0, math.ceil(src[:, 1].max() - h) + 2))
    if pad_l or pad_t or pad_r or pad_b:
        arr = np.pad(arr, ((pad_t, pad_b), (pad_l, pad_r), (0, 0)), mode="edge")
        inv = inv.copy()
        inv[:, 2] += [pad_l, pad_t]
    a, b, c = inv[0]
    d, e, f = inv[1]
    # PIL's affine works on continuous coordinates (pixel i spans i..i+1): shift by half.
    coeffs = (a, b, c + 0.5 * (1 - a - b), d, e, f + 0.5 * (1 - d - e))
    out = Image.fromarray(arr).transform(
        (resolution, resolution), Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC
    )
    return np.asarray(out, dtype=np.uint8)


def map_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]


def face_crop(name: str, image: np.ndarray, landmarks5: np.ndarray, geo: CropGeometry) -> Crop:
    """The aligned crop of one face, or ValueError(code) when it cannot be made well."""
    h, w = image.shape[:2]
    zoom, m, outside = 1.0, None, 1.0
    while zoom <= MAX_ZOOM_IN + 1e-9:
        m = crop_transform(landmarks5, geo, zoom)
        outside = outside_fraction(m, w, h, geo.resolution)
        if outside <= geo.max_outside:
            break
        zoom *= 1.1
    assert m is not None
    if outside > geo.max_outside:
        raise ValueError("CROP_OUTSIDE_PHOTO")
    upscale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if upscale > geo.max_upscale:
        raise ValueError("FACE_TOO_SMALL")
    return Crop(
        name=name,
        image=warp_crop(image, m, geo.resolution),
        landmarks=map_points(m, landmarks5),
        upscale=upscale,
        zoom=zoom,
        outside=outside,
    )


class Preprocessor:
    """Decode, check and crop selfies with the shared face stack."""

    def __init__(self, face_stack: FaceStack, geometry: CropGeometry) -> None:
        self.face_stack = face_stack
        self.geometry = geometry

    @classmethod
    def load(cls, face_models_dir: Path, geometry: CropGeometry) -> Preprocessor:
        from services.faces.face_stack import FaceStack

        return cls(FaceStack.load(face_models_dir), geometry)

    def run(self, photos: Sequence[tuple[str, bytes | np.ndarray]]) -> PreprocessResult:
        from services.faces.image_io import ImageError, decode_image

        result = PreprocessResult()
        for name, data in photos:
            try:
                image = data if isinstance(data, np.ndarray) else decode_image(bytes(data))
            except ImageError as err:
                result.rejected.append(Rejection(name, err.code, err.message))
                continue
            rejection = self._one(name, image, result)
            if rejection is not None:
                result.rejected.append(rejection)
                log.info("photo dropped", extra={"fields": {"photo": name, "code": rejection.code}})
        return result

    def _one(self, name: str, image: np.ndarray, result: PreprocessResult) -> Rejection | None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            return Rejection(name, "UNREADABLE", f"not an RGB image ({image.shape}, {image.dtype})")
        check = self.face_stack.check_selfie(image)
        problems = [r for r in check.reasons if r not in check.ADVISORY]
        if problems:
            code = problems[0]
            return Rejection(name, code, _sentence(code))
        face = check.faces[0]
        try:
            crop = face_crop(name, image, face.landmarks, self.geometry)
        except ValueError as err:
            code = str(err) if str(err) in REASONS else "NO_FACE"
            message = _sentence(code)
            if code == "FACE_TOO_SMALL":
                geo = self.geometry
                need = geo.face_scale * geo.resolution / geo.max_upscale
                message += (
                    f" ({face.interocular:.0f} px between the eyes; a {geo.resolution} px crop"
                    f" needs at least {need:.0f})"
                )
            return Rejection(name, code, message)
        # The likeness reference when the job carries none: cut as the filter cuts selfies.
        crop.identity_chip = self.face_stack.identity_chip(image, face)
        result.crops.append(crop)
        return None


def _sentence(code: str) -> str:
    return REASONS.get(code, code.lower().replace("_", " "))


def flipped(crop: Crop) -> Crop:
    """Horizontal mirror (augmentation): the eye line stays on its row; the landmarks swap
    sides so `landmarks[0]` is still the image-left eye."""
    res = crop.image.shape[1]
    pts = crop.landmarks.copy()
    pts[:, 0] = res - 1 - pts[:, 0]
    pts = pts[[1, 0, 2, 4, 3]]
    return Crop(
        name=crop.name + "#flip",
        image=np.ascontiguousarray(crop.image[:, ::-1]),
        landmarks=pts,
        upscale=crop.upscale,
        zoom=crop.zoom,
        outside=crop.outside,
        identity_chip=crop.identity_chip,
    )


def model_resolution(base_model: Path) -> int:
    """Native resolution of a diffusers folder: UNet sample size x VAE downsample factor."""
    import json

    unet = json.loads((Path(base_model) / "unet" / "config.json").read_text())
    vae = json.loads((Path(base_model) / "vae" / "config.json").read_text())
    sample = unet.get("sample_size", 64)
    if isinstance(sample, list | tuple):
        sample = sample[0]
    return int(sample) * 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)


def to_pil(crop: Crop) -> Any:
    return Image.fromarray(crop.image)
