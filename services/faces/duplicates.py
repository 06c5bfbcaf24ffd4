"""Near-duplicate photos: the same shot uploaded twice, resized, re-encoded, re-cropped or
mirrored; never two photos of a person taken at different times.

Two photos of one person from different days can be as close as a copy by the identity
descriptor (0.15-0.2 on official portraits a Congress apart, while the source's own
re-processed copies of one shot reach 0.2), and coarse image hashes of aligned faces agree
for any two frontal portraits. What only a copy keeps is the fine detail: skin texture,
hair strands, the exact catch-lights. So a pair is a near-duplicate when

- the descriptors are practically equal (an exact copy or a re-encode), or
- the fine detail of the aligned face chips correlates strongly (a high-pass image of the
  inner face, compared at a few pixel shifts and mirrored) *and* the descriptors agree it
  is one person.

Numbers in thresholds.yaml (`duplicates:`), each with what it was measured on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from services.faces import thresholds
from services.faces.identity import pairwise_distances

DETAIL_SIZE = 64
# The inner face (eyes to mouth): the border of a chip is background and hair, which a
# re-crop or a new shot against the same backdrop can share.
INNER = slice(13, 51)
SHIFTS = (-2, -1, 0, 1, 2)


@dataclass(frozen=True)
class DuplicatePair:
    first: int
    second: int
    detail: float | None
    distance: float | None

    @property
    def why(self) -> str:
        parts = []
        if self.distance is not None:
            parts.append(f"descriptor distance {self.distance:.3f}")
        if self.detail is not None:
            parts.append(f"fine detail correlation {self.detail:.2f}")
        return ", ".join(parts)


def load_duplicate_thresholds(path: Path | None = None) -> dict[str, float]:
    return {k: float(v) for k, v in thresholds.section("duplicates", path).items()}


def detail_image(chip: np.ndarray) -> np.ndarray:
    """High-pass grey image of an aligned chip at DETAIL_SIZE px (chip minus its blur)."""
    if chip.ndim != 3 or chip.shape[2] != 3:
        raise ValueError(f"need an HxWx3 chip, got shape {chip.shape}")
    grey = Image.fromarray(np.ascontiguousarray(chip, dtype=np.uint8)).convert("L")
    small = grey.resize((DETAIL_SIZE, DETAIL_SIZE), Image.Resampling.BOX)
    a = np.asarray(small, np.float64)
    blur = np.asarray(small.filter(ImageFilter.GaussianBlur(1.5)), np.float64)
    return a - blur


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 1e-9 else 0.0


def detail_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Best correlation of two detail images' inner faces over small shifts and a mirror
    (landmarks of two copies differ by a pixel or two; an upload may be mirrored)."""
    inner = a[INNER, INNER]
    best = -1.0
    for other in (b, b[:, ::-1]):
        for dy in SHIFTS:
            for dx in SHIFTS:
                ys = slice(INNER.start + dy, INNER.stop + dy)
                xs = slice(INNER.start + dx, INNER.stop + dx)
                best = max(best, _ncc(inner, other[ys, xs]))
    return best


def near_duplicates(
    chips: np.ndarray,
    embeddings: np.ndarray,
    *,
    config: Mapping[str, float] | None = None,
) -> list[DuplicatePair]:
    """Every near-duplicate pair (i < j) among N faces (aligned chips and descriptors)."""
    cfg = config or load_duplicate_thresholds()
    n = len(chips)
    if len(embeddings) != n:
        raise ValueError(f"{n} chips but {len(embeddings)} embeddings")
    if n < 2:
        return []
    dist = pairwise_distances(embeddings)
    details: dict[int, np.ndarray] = {}
    pairs: list[DuplicatePair] = []
    for i in range(n):
        for j in range(i + 1, n):
            d = float(dist[i, j])
            if d <= cfg["max_descriptor_distance_alone"]:
                pairs.append(DuplicatePair(i, j, None, d))
                continue
            if d > cfg["max_descriptor_distance_with_detail"]:
                continue  # not even one person's face: no need to look at pixels
            for k in (i, j):
                if k not in details:
                    details[k] = detail_image(chips[k])
            c = detail_correlation(details[i], details[j])
            if c >= cfg["min_detail_correlation"]:
                pairs.append(DuplicatePair(i, j, c, d))
    return pairs


def duplicate_of(pairs: list[DuplicatePair]) -> dict[int, int]:
    """Each photo to drop -> the photo of its group that stays: copies linked directly or
    through other copies form one group, and the group keeps its first photo."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            i = parent[i]
        return i

    for p in pairs:
        a, b = root(p.first), root(p.second)
        if a != b:
            parent[max(a, b)] = min(a, b)
    members = {i for p in pairs for i in (p.first, p.second)}
    return {i: root(i) for i in sorted(members) if root(i) != i}


def duplicates_to_drop(pairs: list[DuplicatePair]) -> list[int]:
    """Indices to report as "a near-duplicate of an earlier photo": all but the first photo
    of each group of copies."""
    return sorted(duplicate_of(pairs))
