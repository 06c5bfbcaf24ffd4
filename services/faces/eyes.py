"""Eyes of a generated face: open or shut, looking one way, with irises that match.

Everything is measured in the iris model's own 64² crop of each eye (`EyeState.crop`): the
eye is level there and the crop's side is 2.3 eye widths, so every measure is in eye widths
whatever the photo's size or the head's roll. The iris model's 71 contour points start
with the eye outline: 9 points along the lower lid (corner to corner), then 7 along the
upper lid (facts from MediaPipe's iris landmark topology, checked on the fixture photos).

- openness: the widest lid gap over the middle 40 % of the eye, over the outline's width.
  The mesh's own lid points (159/145) come from a 192² face crop and stay 0.12-0.27 apart
  on shut eyes; the iris model's lids, from a crop ten times finer, follow the lid.
  Head yaw shortens the eye's width, not its height, so a turned open eye reads *more*
  open, never shut.
- iris visibility (reported, not a rule): the darkest iris-sized disc along the eye's
  midline over the lid skin above the eye. On the calibration set it does not separate
  shut from open eyes (0.3-0.8 shut, 0.2-1.1 open: light irises, dark skin), so no
  verdict rests on it.
- gaze: where each iris sits in its eye outline (`EyeState.gaze`); the two eyes may
  converge a little sideways (a near object) but never part vertically.
- iris colour and size: chromaticity (colour with the brightness divided out, so the light
  falling on one eye does not count) of the iris ring, pupil excluded, and iris radius in
  eye widths, compared between the two eyes.
- detail: within an ellipse over the eye (lids, lashes, iris), the Laplacian's variance
  over the luminance variance: how much of the eye's contrast is fine detail, whatever the
  light on it. One eye far softer than the other is a smudged eye (a shadow lowers both
  variances alike; a whole-image blur softens both eyes and is the BLURRED rule's
  business). The whole crop's Laplacian alone swung 10x between the eyes of good faces
  (eyebrows, hair, glasses in one crop and not the other).
- the iris from its own pixels, not from the iris model (which draws an iris where a
  normal eye has one: it hardly moves when an iris is moved, resized or recoloured): the
  pixels of the lid opening darker than halfway between its sclera (90th percentile) and
  its darkest (5th percentile). Their centroid's height over the lid midline compares
  where the irises look vertically. Their share of the opening (iris size) is reported,
  not a rule: a sideways glance hides more of one iris under the corner than of the other
  (1.65-2.1 between the eyes of fixture photos whose irises were both moved 0.3 eye
  widths one way) while an iris scaled by 0.6 or 1.45 reads 1.18-1.68.

`eye_finding` turns the two eyes into at most one reason: EYES_CLOSED (either eye shut: a
wink is a shut eye in a headshot) or EYES_INCONSISTENT (gaze, iris colour, iris height, one eye
smudged), with the numbers behind it for the scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.faces.face_mesh import EyeState, Mesh
from services.faces.thresholds import load_section

LOWER_LID = slice(0, 9)
UPPER_LID = slice(9, 16)
OUTLINE = 16
# Where across the eye (share of its width from the corner) the lid gap is read.
GAP_SPAN = (0.3, 0.4, 0.5, 0.6, 0.7)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class EyeThresholds:
    """Eye rules; values and the numbers they came from are in thresholds.yaml `eyes:`."""

    min_closed_eye_width_px: float = 10.0
    closed_openness: float = 0.18
    wink_ratio: float = 0.65
    wink_max_openness: float = 0.27
    min_eye_width_px: float = 16.0
    max_gaze_disagreement: float = 0.2
    max_vertical_gaze: float = 0.065
    max_iris_chroma_distance: float = 0.13
    max_detail_ratio: float = 4.5
    max_dark_height_difference: float = 0.035

    @classmethod
    def load(cls, path: Path | None = None) -> EyeThresholds:
        return load_section(cls, "eyes", path)


@dataclass(frozen=True)
class EyeMeasures:
    openness: float  # lid gap / eye width (iris model), 0 shut, ~0.3-0.45 open
    iris_luma_ratio: float  # iris disc luminance / lid skin luminance
    iris_colour: np.ndarray  # mean RGB of the iris ring
    iris_radius: float  # eye widths
    detail: float  # Laplacian variance / luminance variance over the eye
    dark_share: float  # share of the lid opening that is iris-dark
    dark_height: float  # dark pixels' centroid below the lid midline, eye widths


@dataclass(frozen=True)
class EyeFinding:
    reason: str | None  # EYES_CLOSED, EYES_INCONSISTENT or None
    why: str  # which rule fired ("" when none)
    left: EyeMeasures
    right: EyeMeasures
    gaze_disagreement: float
    vertical_gaze: float
    chroma_distance: float
    radius_ratio: float
    detail_ratio: float
    dark_share_ratio: float
    dark_height_difference: float
    thresholds: EyeThresholds

    @property
    def openness(self) -> float:
        return min(self.left.openness, self.right.openness)

    @property
    def consistency(self) -> float:
        """1 when gaze and irises agree; 0.5 at the first limit reached, 0 at twice it."""
        t = self.thresholds
        worst = max(
            self.gaze_disagreement / t.max_gaze_disagreement,
            self.vertical_gaze / t.max_vertical_gaze,
            self.chroma_distance / t.max_iris_chroma_distance,
        )
        return float(np.clip(1.0 - worst / 2, 0.0, 1.0))


def _lids(contour: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    c = np.asarray(contour, np.float64)
    lower = c[LOWER_LID]
    # The upper lid shares the two corners with the lower one.
    upper = np.vstack([c[0:1], c[UPPER_LID], c[8:9]])
    lower = lower[np.argsort(lower[:, 0])]
    upper = upper[np.argsort(upper[:, 0])]
    x0, x1 = float(c[:OUTLINE, 0].min()), float(c[:OUTLINE, 0].max())
    return lower, upper, x0, x1


def _eye_detail(gray: np.ndarray, region: np.ndarray) -> float:
    """Laplacian variance over luminance variance inside `region` (scale-free sharpness)."""
    lap = gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]
    inner = region[1:-1, 1:-1]
    if inner.sum() < 8:
        return 0.0
    return float(lap[inner].var() / max(float(gray[1:-1, 1:-1][inner].var()), 1e-6))


def _dark_iris(
    gray: np.ndarray, opening: np.ndarray, midline: np.ndarray, width: float
) -> tuple[float, float]:
    """(share of the opening that is iris-dark, its centroid below the midline in eye widths)."""
    values = gray[opening]
    if values.size < 10:
        return 0.0, 0.0
    light, dark = np.percentile(values, (90, 5))
    mask = opening & (gray < (light + dark) / 2)
    if not mask.any():
        return 0.0, 0.0
    ys, xs = np.nonzero(mask)
    height = float(np.mean(ys - midline[ys, xs])) / width
    return float(mask.sum() / opening.sum()), height


def _darkest_disc(
    gray: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    x0: float,
    width: float,
    rho: float,
) -> float:
    """Mean luminance of the darkest iris-sized disc on the eye's midline.

    The iris is wherever the eye looks, not where the iris model puts it; on a shut eye the
    midline runs along the lash line, which is thin next to an iris, so a disc there stays
    lighter than one on an iris.
    """
    n = gray.shape[0]
    yy, xx = np.mgrid[0:n, 0:n]
    us = x0 + width * np.linspace(0.2, 0.8, 13)
    vs = (np.interp(us, lower[:, 0], lower[:, 1]) + np.interp(us, upper[:, 0], upper[:, 1])) / 2
    best = float("inf")
    for u, v in zip(us, vs, strict=True):
        disc = (xx - u) ** 2 + (yy - v) ** 2 <= rho * rho
        if disc.any():
            best = min(best, float(gray[disc].mean()))
    return best if np.isfinite(best) else float(gray.mean())


def measure_eye(eye: EyeState) -> EyeMeasures:
    if eye.crop is None or eye.crop_contour is None or eye.crop_iris is None:
        raise ValueError("EyeState without the iris model's crop view")
    lower, upper, x0, x1 = _lids(eye.crop_contour)
    width = max(x1 - x0, 1e-6)
    xs = x0 + width * np.asarray(GAP_SPAN)
    gaps = np.interp(xs, lower[:, 0], lower[:, 1]) - np.interp(xs, upper[:, 0], upper[:, 1])
    openness = max(float(gaps.max()), 0.0) / width

    crop = eye.crop.astype(np.float32)
    gray = crop @ LUMA
    iris = np.asarray(eye.crop_iris, np.float64)
    centre = iris[0]
    radius = float(np.mean(np.linalg.norm(iris[1:] - centre, axis=1)))
    n = crop.shape[0]
    yy, xx = np.mgrid[0:n, 0:n]
    dist = np.hypot(xx - centre[0], yy - centre[1])
    ring = (dist <= max(radius, 1.0)) & (dist >= 0.45 * radius)
    # Lid skin: a band 0.12-0.30 eye widths above the upper lid, across the eye.
    lid_y = np.interp(xx, upper[:, 0], upper[:, 1])
    band = (yy < lid_y - 0.12 * width) & (yy > lid_y - 0.30 * width) & (xx > x0) & (xx < x1)
    skin = float(np.median(gray[band])) if band.any() else float(np.median(gray))
    iris_luma = _darkest_disc(gray, lower, upper, x0, width, 0.5 * max(radius, 1.0))
    colour = crop[ring].mean(0) if ring.any() else crop.reshape(-1, 3).mean(0)
    lower_y = np.interp(xx, lower[:, 0], lower[:, 1])
    midline = (lid_y + lower_y) / 2
    # The ellipse a smear of the eye covers: lids, lashes and iris, not the brow.
    around = ((xx - (x0 + x1) / 2) / (0.6 * width)) ** 2 + ((yy - midline) / (0.35 * width)) ** 2
    opening = (xx > x0) & (xx < x1) & (yy > lid_y) & (yy < lower_y)
    dark_share, dark_height = _dark_iris(gray, opening, midline, width)
    return EyeMeasures(
        openness=openness,
        iris_luma_ratio=iris_luma / max(skin, 1.0),
        iris_colour=colour,
        iris_radius=radius / width,
        detail=_eye_detail(gray, around <= 1.0),
        dark_share=dark_share,
        dark_height=dark_height,
    )


def chromaticity(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb, np.float64) / max(float(np.sum(rgb)), 1.0)


def _closed(m: EyeMeasures, t: EyeThresholds) -> bool:
    return m.openness < t.closed_openness


def eye_finding(mesh: Mesh, t: EyeThresholds) -> EyeFinding:
    left, right = mesh.eye_image_left, mesh.eye_image_right
    ml, mr = measure_eye(left), measure_eye(right)
    chroma = float(np.linalg.norm(chromaticity(ml.iris_colour) - chromaticity(mr.iris_colour)))
    radius = max(ml.iris_radius, mr.iris_radius) / max(min(ml.iris_radius, mr.iris_radius), 1e-6)
    detail = max(ml.detail, mr.detail) / max(min(ml.detail, mr.detail), 1e-6)
    dark_share = max(ml.dark_share, mr.dark_share) / max(min(ml.dark_share, mr.dark_share), 1e-3)
    # Both crops are level and the image-right one only mirrored sideways: heights compare.
    dark_height = abs(ml.dark_height - mr.dark_height)
    gaze = mesh.gaze_disagreement
    vertical = abs(float(left.gaze[1] - right.gaze[1]))
    lo, hi = sorted((ml.openness, mr.openness))
    reason, why = None, ""
    if min(left.width, right.width) < t.min_closed_eye_width_px:
        pass  # too few pixels to tell a lid from a lash
    elif _closed(ml, t) and _closed(mr, t):
        reason, why = "EYES_CLOSED", "both eyes shut"
    elif _closed(ml, t) or _closed(mr, t):
        reason, why = "EYES_CLOSED", "one eye shut"
    elif lo < t.wink_max_openness and lo < t.wink_ratio * hi:
        reason, why = "EYES_CLOSED", "one eye far narrower than the other"
    elif min(left.width, right.width) >= t.min_eye_width_px:
        if gaze > t.max_gaze_disagreement or vertical > t.max_vertical_gaze:
            reason, why = "EYES_INCONSISTENT", "irises look different ways"
        elif dark_height > t.max_dark_height_difference:
            reason, why = "EYES_INCONSISTENT", "one iris higher in its eye than the other"
        elif chroma > t.max_iris_chroma_distance:
            reason, why = "EYES_INCONSISTENT", "irises of different colours"
        elif detail > t.max_detail_ratio:
            reason, why = "EYES_INCONSISTENT", "one eye smudged"
    return EyeFinding(
        reason=reason,
        why=why,
        left=ml,
        right=mr,
        gaze_disagreement=gaze,
        vertical_gaze=vertical,
        chroma_distance=chroma,
        radius_ratio=radius,
        detail_ratio=detail,
        dark_share_ratio=dark_share,
        dark_height_difference=dark_height,
        thresholds=t,
    )
