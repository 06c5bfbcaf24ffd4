"""Identity (likeness): dlib's 128-d face descriptor on onnxruntime, distances, consensus.

The descriptor (models/face_stack/descriptor.py) maps an aligned 150x150 chip
(services/faces/identity_align.py) to 128 numbers; two chips of one person lie within
euclidean distance ~0.6 of each other (dlib's published operating point). Every number
used here comes from the `identity:` section of thresholds.yaml, calibrated with
`python -m bench.bench_identity` on the labelled set in tests/fixtures/identity.

Who a set of selfies shows is decided by pairwise agreement (`consensus`): the largest
group of photos that all match each other is the person; each photo is then judged by its
distance to the mean of that group's other photos, against a limit derived from the one
pairwise limit (`centre_limit`), and that distance is what is reported.

Likeness mapping (0..1, for people and for ranking), d = distance to the person's centre:

    likeness(d) = 1 / (1 + exp((d - m) / s))

with m = `likeness_midpoint` and s = `likeness_softness`. It is monotone, so ranking by
likeness is ranking by distance, and it saturates where the descriptor stops being
informative.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from services.faces import thresholds

FILE = "descriptor.onnx"
CHIP_SIZE = 150
DIM = 128


class IdentityError(ValueError):
    """Input the descriptor cannot take (wrong shape or dtype), said plainly."""


def load_identity_thresholds(path: Path | None = None) -> dict[str, float]:
    """The `identity:` section of thresholds.yaml as plain floats."""
    return {k: float(v) for k, v in thresholds.section("identity", path).items()}


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


def centre_limit(pair_limit: float, k: int) -> float:
    """The distance limit to the mean of `k` genuine descriptors that matches `pair_limit`.

    With a person's descriptors spread around their true centre with variance s^2 per photo,
    two photos lie sqrt(2) s apart and a photo lies s sqrt(1 + 1/k) from the mean of k
    others: the same evidence as a pair at distance d is a centre distance of
    d sqrt((1 + 1/k) / 2). One calibrated pair limit so gives the centre limit for any set
    size (k = 1: the pair limit itself; k -> inf: the pair limit / sqrt(2)).
    """
    k = max(1, int(k))
    return float(pair_limit * np.sqrt((1.0 + 1.0 / k) / 2.0))


@dataclass(frozen=True)
class Consensus:
    """Who the photos show, decided by pairwise agreement.

    `members`: the largest group of photos that are pairwise the same person (every pair
    within the pair limit); `centre`: their mean descriptor; `distances[i]`: photo i's
    distance to the mean of the members other than itself (so a member is judged exactly as
    a non-member would be); `limits[i]`: the limit that distance was judged against;
    `different`: photos over their limit; `consistent`: False when no group of photos is a
    clear majority (then every photo is in `different`).
    """

    members: list[int]
    centre: np.ndarray
    distances: np.ndarray
    limits: np.ndarray
    different: list[int]
    consistent: bool


def _largest_clique(close: np.ndarray, d: np.ndarray, allowed: np.ndarray) -> list[int]:
    """Largest set of allowed photos all pairwise `close`, grown greedily from every seed.

    Sets are small (8-20 photos) so trying each seed is cheap; among equally large groups
    the tightest (smallest mean pairwise distance) wins, so the order of photos in the
    request never changes the answer.
    """
    best: list[int] = []
    best_spread = np.inf
    idx = [int(i) for i in np.flatnonzero(allowed)]
    for seed in idx:
        group = [seed]
        cands = [j for j in idx if j != seed and close[seed, j]]
        while cands:
            # Add the candidate whose worst distance to the group is smallest.
            worst = [max(d[j, g] for g in group) for j in cands]
            j = cands[int(np.argmin(worst))]
            group.append(j)
            cands = [c for c in cands if c != j and close[c, j]]
        spread = (
            float(np.mean([d[a, b] for a in group for b in group if a < b]))
            if len(group) > 1
            else 0.0
        )
        if len(group) > len(best) or (len(group) == len(best) and spread < best_spread):
            best, best_spread = sorted(group), spread
    return best


def consensus(
    embeddings: np.ndarray,
    *,
    config: Mapping[str, float] | None = None,
    eligible: np.ndarray | None = None,
) -> Consensus:
    """The person most photos show, and which photos show someone else.

    1. Photos are linked when their descriptors are within `same_person_max_distance`.
    2. The identity is the largest group of mutually linked photos (among `eligible` ones:
       full profiles do not vote, their descriptors are the least reliable). One or two
       impostors cannot sit inside it unless they match every one of its photos.
    3. The set is consistent when that group holds at least half the voting photos and is
       larger than any group left outside it; otherwise no person is the majority and every
       photo is reported.
    4. Each photo is judged by its distance to the mean of the group's other photos, against
       `centre_limit(pair limit, size of that mean)`; the distance reported is the one
       judged.
    """
    e = _as_matrix(embeddings)
    n = len(e)
    cfg = config or load_identity_thresholds()
    pair = float(cfg["same_person_max_distance"])
    allowed = np.ones(n, bool) if eligible is None else np.asarray(eligible, bool).copy()
    if n == 0:
        z = np.zeros(0)
        return Consensus([], np.zeros(DIM, np.float32), z, z, [], True)
    if not allowed.any():
        allowed[:] = True
    d = pairwise_distances(e)
    close = d <= pair
    members = _largest_clique(close, d, allowed)
    voters = int(allowed.sum())
    rest = allowed.copy()
    rest[members] = False
    runner_up = len(_largest_clique(close, d, rest)) if rest.any() else 0
    consistent = voters <= 1 or (
        len(members) >= 2 and 2 * len(members) >= voters and len(members) > runner_up
    )
    centre = e[members].mean(0)
    distances = np.zeros(n)
    limits = np.zeros(n)
    member_set = set(members)
    for i in range(n):
        others = [m for m in members if m != i] if i in member_set else members
        if not others:  # a lone photo: nothing to compare with
            distances[i], limits[i] = 0.0, pair
            continue
        distances[i] = float(np.linalg.norm(e[i] - e[others].mean(0)))
        limits[i] = centre_limit(pair, len(others))
    if consistent:
        different = [int(i) for i in np.flatnonzero(distances > limits)]
    else:
        different = list(range(n))
    return Consensus(
        members=members,
        centre=centre.astype(np.float32),
        distances=distances,
        limits=limits,
        different=different,
        consistent=consistent,
    )


def identity_centre(
    embeddings: np.ndarray, config: Mapping[str, float] | None = None
) -> np.ndarray:
    """The person's reference descriptor: the mean of the largest mutually consistent group
    of photos (`consensus`), which a minority of other people's photos cannot move."""
    e = _as_matrix(embeddings)
    if len(e) == 0:
        raise IdentityError("identity_centre needs at least one embedding")
    return consensus(e, config=config).centre


def different_person(
    embeddings: np.ndarray,
    *,
    config: Mapping[str, float] | None = None,
) -> list[int]:
    """Indices of photos that are not the person most photos show (`consensus`).

    With two photos there is no majority: both are returned when they are not one person.
    With no consistent majority every photo is returned.
    """
    e = _as_matrix(embeddings)
    if len(e) < 2:
        return []
    return consensus(e, config=config).different


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
