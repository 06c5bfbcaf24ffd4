"""Identity (likeness): dlib's 128-d face descriptor on onnxruntime, distances, consensus.

The descriptor (models/face_stack/descriptor.py) maps an aligned 150x150 chip
(services/faces/identity_align.py) to 128 numbers; two chips of one person lie within
euclidean distance ~0.6 of each other (dlib's published operating point; our fixture
calibration is in bench/results/identity_calibration.json). Every number used here comes
from the `identity:` section of thresholds.yaml.

Likeness mapping (0..1, for people and for ranking), d = distance to the person's centre
(`identity_centre` of the selfies):

    likeness(d) = 1 / (1 + exp((d - m) / s))

with m = `likeness_midpoint` (= the different-person centre threshold, so likeness 0.5
means "on the fence") and s = `likeness_softness`. With m = 0.51, s = 0.05: d 0.30 -> 0.99,
0.34 (fixture genuine median) -> 0.97, 0.47 (worst genuine) -> 0.69, 0.51 -> 0.5,
0.55 (nearest impostor) -> 0.31, 0.70 -> 0.02. It is monotone, so ranking by likeness is
ranking by distance, and it saturates where the descriptor stops being informative.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import yaml

from services.faces.thresholds import THRESHOLDS_FILE

FILE = "descriptor.onnx"
CHIP_SIZE = 150
DIM = 128


class IdentityError(ValueError):
    """Input the descriptor cannot take (wrong shape or dtype), said plainly."""


def load_identity_thresholds(path: Path | None = None) -> dict[str, float]:
    """The `identity:` section of thresholds.yaml as plain floats."""
    data = yaml.safe_load((path or THRESHOLDS_FILE).read_text()) or {}
    section = data.get("identity") or {}
    return {k: float(v) for k, v in section.items()}


# ---------------------------------------------------------------------------- the model


@dataclass
class IdentityModel:
    """The descriptor session. `flip_average`: embed each chip and its mirror image and
    average the two (dlib's "jitter" idea, cheapest form). On the fixtures this lifts the
    genuine/impostor separation d' from 4.71 to 4.91 and cuts the EER from 1.2 % to 0.5 %,
    at twice the compute (still one session run per batch)."""

    session: ort.InferenceSession
    batch_size: int = 64
    flip_average: bool = True

    @classmethod
    def load(
        cls,
        models_dir: Path,
        *,
        prefer_gpu: bool = True,
        intra_op_threads: int = 0,
        batch_size: int = 64,
        flip_average: bool = True,
    ) -> IdentityModel:
        """Open `descriptor.onnx` from the face-stack folder; CUDA first when available.

        When the folder has a manifest.json with a descriptor entry, the file's sha256 must
        match it: a half-copied or stale model is refused here rather than scoring wrongly.
        """
        path = Path(models_dir) / FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} missing: build it with `python -m models.face_stack.build` "
                "(or models.face_stack.descriptor)"
            )
        _check_manifest(path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.inter_op_num_threads = 1
        if intra_op_threads > 0:
            opts.intra_op_num_threads = intra_op_threads
        opts.log_severity_level = 3
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if prefer_gpu and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        session = ort.InferenceSession(str(path), opts, providers=providers)
        return cls(session=session, batch_size=batch_size, flip_average=flip_average)

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """N aligned chips (N x 150 x 150 x 3 uint8 RGB) -> N x 128 float32 descriptors."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            raise IdentityError("embed takes a batch: pass chips[None] for a single chip")
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise IdentityError(
                f"chips must be N x {CHIP_SIZE} x {CHIP_SIZE} x 3, got {chips.shape}"
            )
        if chips.dtype != np.uint8:
            raise IdentityError(f"chips must be uint8 RGB, got {chips.dtype}")
        if len(chips) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        out = [
            self._run(chips[i : i + self.batch_size]) for i in range(0, len(chips), self.batch_size)
        ]
        return np.concatenate(out).astype(np.float32, copy=False)

    def _run(self, chips: np.ndarray) -> np.ndarray:
        name = self.session.get_inputs()[0].name
        if not self.flip_average:
            return self.session.run(None, {name: np.ascontiguousarray(chips)})[0]
        both = np.concatenate([chips, chips[:, :, ::-1]])  # one run for chip + mirror
        out = self.session.run(None, {name: np.ascontiguousarray(both)})[0]
        n = len(chips)
        return (out[:n] + out[n:]) / 2


def _check_manifest(path: Path) -> None:
    manifest = path.with_name("manifest.json")
    if not manifest.is_file():
        return
    try:
        entries = json.loads(manifest.read_text()).get("models", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        return
    recorded = [e for e in entries if isinstance(e, dict) and e.get("file") == path.name]
    if not recorded or not recorded[0].get("sha256"):
        return
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != recorded[0]["sha256"]:
        raise IdentityError(f"{path} does not match its manifest sha256; rebuild the face stack")


# ---------------------------------------------------------------------------- distances


def _as_matrix(embeddings: np.ndarray) -> np.ndarray:
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim == 1:
        e = e[None]
    if e.ndim != 2 or e.shape[1] != DIM:
        raise IdentityError(f"embeddings must be N x {DIM}, got {np.shape(embeddings)}")
    if not np.isfinite(e).all():
        raise IdentityError("embeddings contain NaN or infinity")
    return e


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise euclidean distance (dlib's metric); broadcasts a single row."""
    return np.linalg.norm(_as_matrix(a) - _as_matrix(b), axis=1)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise 1 - cosine similarity; scale-free, for callers that prefer it."""
    a, b = _as_matrix(a), _as_matrix(b)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return 1.0 - num / np.maximum(den, 1e-12)


def pairwise_distances(embeddings: np.ndarray) -> np.ndarray:
    """N x N euclidean distance matrix."""
    e = _as_matrix(embeddings)
    sq = (e**2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * e @ e.T
    d = np.sqrt(np.clip(d2, 0, None))
    np.fill_diagonal(d, 0.0)
    return d


def distance_to_centre(embeddings: np.ndarray, centre: np.ndarray) -> np.ndarray:
    return euclidean(embeddings, centre)


# ---------------------------------------------------------------------------- consensus


def identity_centre(embeddings: np.ndarray, keep: float = 0.7, iterations: int = 5) -> np.ndarray:
    """Robust centre of one person's descriptors: a trimmed mean seeded at the medoid.

    Start at the medoid (the photo with the smallest total distance to the others, which a
    minority of outliers cannot move); then repeat: keep the `keep` share of photos closest
    to the centre (at least 2, or all when there are 2 or fewer) and average them. An odd
    photo of someone else, or a bad crop, is outside the kept share and does not drag the
    centre; a mean of several genuine photos is a better template than any single one.
    """
    e = _as_matrix(embeddings)
    n = len(e)
    if n == 0:
        raise IdentityError("identity_centre needs at least one embedding")
    if n <= 2:
        return e.mean(0).astype(np.float32)
    d = pairwise_distances(e)
    centre = e[int(np.argmin(d.sum(1)))]
    k = max(2, int(np.ceil(keep * n)))
    chosen: np.ndarray | None = None
    for _ in range(iterations):
        order = np.argsort(np.linalg.norm(e - centre, axis=1), kind="stable")[:k]
        order.sort()
        if chosen is not None and np.array_equal(order, chosen):
            break
        chosen = order
        centre = e[chosen].mean(0)
    return centre.astype(np.float32)


def different_person(
    embeddings: np.ndarray,
    threshold: float | None = None,
    *,
    config: Mapping[str, float] | None = None,
) -> list[int]:
    """Indices of photos whose face is not the person most of the photos show.

    The person is the robust centre of all photos (`identity_centre`); a photo is flagged
    when its distance to that centre is over `threshold` (default:
    `identity.different_person_centre_distance`). The centre is a mean of several
    descriptors, so genuine photos sit closer to it than to each other: the centre
    threshold is calibrated separately from the pairwise one (see bench/identity_calibration.py).
    Works while the main person is the majority; with no majority the verdict is the
    medoid's side, which the caller should word as "these photos do not agree". With two
    photos there is no majority: both are returned when they are not one person.
    """
    e = _as_matrix(embeddings)
    if len(e) < 2:
        return []
    cfg = config or load_identity_thresholds()
    if len(e) == 2:
        # No majority to side with: two faces that are not one person are both reported.
        apart = euclidean(e[0], e[1])[0] > float(cfg["same_person_max_distance"])
        return [0, 1] if apart else []
    t = float(threshold if threshold is not None else cfg["different_person_centre_distance"])
    centre = identity_centre(e, keep=float(cfg.get("centre_keep_share", 0.7)))
    dist = distance_to_centre(e, centre)
    return [int(i) for i in np.flatnonzero(dist > t)]


def likeness(distances: np.ndarray, config: Mapping[str, float] | None = None) -> np.ndarray:
    """0..1 likeness from the euclidean distance to the person's centre (module docstring)."""
    cfg = config or load_identity_thresholds()
    t = float(cfg["likeness_midpoint"])
    s = float(cfg["likeness_softness"])
    d = np.asarray(distances, dtype=np.float64)
    return (1.0 / (1.0 + np.exp(np.clip((d - t) / s, -50, 50)))).astype(np.float32)


def likeness_to(
    embeddings: np.ndarray, reference: np.ndarray, config: Mapping[str, float] | None = None
) -> np.ndarray:
    """Likeness of each embedding to a reference (an `identity_centre` of the selfies)."""
    return likeness(euclidean(embeddings, reference), config)


def describe(config: Mapping[str, Any] | None = None) -> str:
    cfg = config or load_identity_thresholds()
    return ", ".join(f"{k}={v}" for k, v in sorted(cfg.items()))
