"""Near-duplicate photos: the same shot uploaded twice, resized, re-encoded or re-cropped.

Two signals, both taken on the aligned face chip so that resizing and cropping the photo
do not matter (the chip is cut at the same face geometry whatever the frame):
- a 64-bit perceptual hash (DCT of the 32x32 grey chip, the 8x8 lowest frequencies without
  DC, each bit = above the median; Zauner 2010, "Implementation and benchmarking of
  perceptual image hash functions"). Equal shots differ in a few bits; re-encoding or
  resizing flips a handful.
- the identity descriptor: two different photos of one person are rarely closer than ~0.3
  (the fixtures: 0.33 at least), the same shot re-encoded lands under ~0.05.
A pair is a near-duplicate when the descriptors are almost equal, or when the hashes are
close *and* the descriptors agree it is the same person (the hash alone cannot tell two
people apart well: aligned faces share their coarse layout). Numbers in thresholds.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from services.faces.identity import THRESHOLDS_FILE, pairwise_distances

HASH_SIZE = 8
DCT_SIZE = 32


@dataclass(frozen=True)
class DuplicatePair:
    first: int
    second: int
    hamming: int | None
    distance: float | None

    @property
    def why(self) -> str:
        parts = []
        if self.distance is not None:
            parts.append(f"descriptor distance {self.distance:.3f}")
        if self.hamming is not None:
            parts.append(f"hash differs in {self.hamming}/64 bits")
        return ", ".join(parts)


def load_duplicate_thresholds(path: Path | None = None) -> dict[str, float]:
    data = yaml.safe_load((path or THRESHOLDS_FILE).read_text()) or {}
    return {k: float(v) for k, v in (data.get("duplicates") or {}).items()}


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (n x n): row k is the k-th cosine basis vector."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


def perceptual_hash(chip: np.ndarray) -> int:
    """64-bit DCT hash of an RGB uint8 chip (any size)."""
    from PIL import Image

    if chip.ndim != 3 or chip.shape[2] != 3:
        raise ValueError(f"need an HxWx3 chip, got shape {chip.shape}")
    grey = Image.fromarray(np.ascontiguousarray(chip, dtype=np.uint8)).convert("L")
    small = np.asarray(grey.resize((DCT_SIZE, DCT_SIZE), Image.Resampling.BOX), dtype=np.float64)
    d = _dct_matrix(DCT_SIZE)
    coeffs = (d @ small @ d.T)[:HASH_SIZE, :HASH_SIZE].ravel()[1:]  # drop DC
    bits = coeffs > np.median(coeffs)
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def near_duplicates(
    chips: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    *,
    config: Mapping[str, float] | None = None,
) -> list[DuplicatePair]:
    """Every near-duplicate pair (i < j) among N faces, from chips and/or embeddings.

    With only chips, the hash decides alone with its strict limit; with only embeddings,
    the descriptor distance decides alone. Both together give the most reliable answer.
    """
    if chips is None and embeddings is None:
        raise ValueError("near_duplicates needs chips, embeddings or both")
    cfg = config or load_duplicate_thresholds()
    n = len(chips) if chips is not None else len(embeddings)  # type: ignore[arg-type]
    if embeddings is not None and chips is not None and len(embeddings) != n:
        raise ValueError(f"{n} chips but {len(embeddings)} embeddings")
    hashes = [perceptual_hash(c) for c in chips] if chips is not None else None
    dist = pairwise_distances(embeddings) if embeddings is not None and n else None
    pairs: list[DuplicatePair] = []
    for i in range(n):
        for j in range(i + 1, n):
            h = hamming(hashes[i], hashes[j]) if hashes is not None else None
            d = float(dist[i, j]) if dist is not None else None
            if _is_duplicate(h, d, cfg):
                pairs.append(DuplicatePair(i, j, h, d))
    return pairs


def _is_duplicate(h: int | None, d: float | None, cfg: Mapping[str, float]) -> bool:
    if d is not None and d <= cfg["max_descriptor_distance"]:
        return True
    if h is None:
        return False
    if d is None:
        return h <= cfg["max_hash_bits_alone"]
    return h <= cfg["max_hash_bits"] and d <= cfg["max_descriptor_distance_with_hash"]


def duplicates_to_drop(pairs: list[DuplicatePair]) -> list[int]:
    """Indices to report as "a near-duplicate of an earlier photo": the later of each pair,
    except where the earlier one is itself already dropped (a chain keeps its first)."""
    dropped: set[int] = set()
    for p in sorted(pairs, key=lambda p: (p.first, p.second)):
        if p.first not in dropped:
            dropped.add(p.second)
    return sorted(dropped)
