"""Choose the N results to deliver: every gate passed, then quality and variety together.

1. Gates: a candidate with any upstream reason (no face, broken hand, eyes, blur ...) is out;
   so is one under `min_likeness` or `min_quality` (thresholds.yaml `selection:`). The
   report counts how many pass each gate on its own and all of them together.
2. Ranking by maximal marginal relevance (Carbonell & Goldstein 1998): repeatedly take

       argmax_i  lambda * relevance(i) - (1 - lambda) * max_{j chosen} similarity(i, j)

   with relevance = quality x likeness (a sharp image of someone else is worthless, a
   perfect likeness with a mangled hand too) and a similarity that says "a person would
   see these two as the same picture":

       similarity = w_style * [same style]
                  + w_pose  * exp(-(d_yaw^2 + d_pitch^2) / (2 * bin^2))
                  + w_emb   * max(0, 1 - descriptor distance / embedding_distance_scale)

   Top-N by one score would fill the result with 40 near-copies of the best style and
   pose; MMR lets the best of each style/pose in first and still prefers quality within
   them. The order is deterministic: ties break on the result id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from services.faces.thresholds import load_section


class Scored(Protocol):
    """What selection reads from a candidate (worker.Pick and Candidate both fit)."""

    result_id: str
    style_id: str
    scores: Mapping[str, float]
    embedding: np.ndarray | None


@dataclass(frozen=True)
class Candidate:
    result_id: str
    style_id: str
    scores: Mapping[str, float]
    embedding: np.ndarray | None = None
    # Upstream gate failures ("no_face", "hands", ...): any reason keeps it out.
    reasons: Sequence[str] = ()


@dataclass(frozen=True)
class SelectionConfig:
    min_likeness: float = 0.5
    min_quality: float = 0.3
    mmr_lambda: float = 0.5
    weight_style: float = 0.4
    weight_pose: float = 0.4
    weight_embedding: float = 0.2
    pose_bin_degrees: float = 15.0
    embedding_distance_scale: float = 0.4

    @classmethod
    def load(cls, path: Path | None = None) -> SelectionConfig:
        return load_section(cls, "selection", path)


@dataclass
class Selection:
    ranked: list[str]
    gates: dict[str, int] = field(default_factory=dict)
    relevance: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------- gates


def _reasons(c: Scored) -> Sequence[str]:
    return tuple(getattr(c, "reasons", ()) or ())


def apply_gates(
    candidates: Sequence[Scored], cfg: SelectionConfig
) -> tuple[list[Scored], dict[str, int]]:
    """Candidates that pass every gate, and how many pass each gate on its own."""
    gates = {
        "candidates": len(candidates),
        "upstream": 0,  # no reason from the face stack
        "likeness": 0,
        "quality": 0,
        "passed": 0,
    }
    passed = []
    for c in candidates:
        ok_up = not _reasons(c)
        # A score that is absent was not measured (e.g. no selfie reference): no gate.
        ok_like = float(c.scores.get("likeness", 1.0)) >= cfg.min_likeness
        ok_qual = float(c.scores.get("quality", 1.0)) >= cfg.min_quality
        gates["upstream"] += ok_up
        gates["likeness"] += ok_like
        gates["quality"] += ok_qual
        if ok_up and ok_like and ok_qual:
            passed.append(c)
    gates["passed"] = len(passed)
    return passed, gates


# ---------------------------------------------------------------------------- similarity


def relevance(c: Scored) -> float:
    """quality x likeness; an unmeasured factor counts as 1 (it ranks nobody down)."""
    return float(c.scores.get("quality", 1.0)) * float(c.scores.get("likeness", 1.0))


def similarity_matrix(candidates: Sequence[Scored], cfg: SelectionConfig) -> np.ndarray:
    """N x N redundancy between candidates, 0 (nothing alike) .. 1 (same picture)."""
    n = len(candidates)
    styles = np.array([c.style_id for c in candidates], dtype=object)
    same_style = (styles[:, None] == styles[None, :]).astype(np.float64)
    yaw = np.array([float(c.scores.get("yaw", 0.0)) for c in candidates])
    pitch = np.array([float(c.scores.get("pitch", 0.0)) for c in candidates])
    d2 = (yaw[:, None] - yaw[None, :]) ** 2 + (pitch[:, None] - pitch[None, :]) ** 2
    pose = np.exp(-d2 / (2 * cfg.pose_bin_degrees**2))
    sim = cfg.weight_style * same_style + cfg.weight_pose * pose
    have = [c.embedding is not None for c in candidates]
    total = cfg.weight_style + cfg.weight_pose
    if cfg.weight_embedding > 0 and n and all(have):
        e = np.stack([np.asarray(c.embedding, np.float64) for c in candidates])  # type: ignore[arg-type]
        sq = (e**2).sum(1)
        dist = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2 * e @ e.T, 0, None))
        sim = sim + cfg.weight_embedding * np.clip(1 - dist / cfg.embedding_distance_scale, 0, 1)
        total += cfg.weight_embedding
    # Without descriptors the other parts are rescaled so similarity still spans 0..1.
    return sim / total if total > 0 else sim


def mmr_order(candidates: Sequence[Scored], n: int, cfg: SelectionConfig) -> list[int]:
    """Indices of up to n candidates in MMR order (deterministic)."""
    if n <= 0 or not candidates:
        return []
    rel = np.array([relevance(c) for c in candidates])
    sim = similarity_matrix(candidates, cfg)
    ids = [c.result_id for c in candidates]
    # Ties: higher relevance first, then smaller id, whatever order the rows came in.
    tiebreak = np.argsort(np.lexsort((np.array(ids, dtype=object).astype(str), -rel)))
    chosen: list[int] = []
    max_sim = np.zeros(len(candidates))
    free = np.ones(len(candidates), dtype=bool)
    lam = cfg.mmr_lambda
    for _ in range(min(n, len(candidates))):
        score = lam * rel - (1 - lam) * max_sim
        score[~free] = -np.inf
        best = score.max()
        ties = np.flatnonzero(np.isclose(score, best, rtol=0, atol=1e-12) & free)
        pick = int(ties[np.argmin(tiebreak[ties])])
        chosen.append(pick)
        free[pick] = False
        max_sim = np.maximum(max_sim, sim[pick])
    return chosen


# ---------------------------------------------------------------------------- API


def select(candidates: Sequence[Scored], n: int, cfg: SelectionConfig | None = None) -> Selection:
    """Gate, then rank up to n by MMR. Fewer than n come back when fewer pass."""
    if n < 0:
        raise ValueError(f"result count must be >= 0, got {n}")
    cfg = cfg or SelectionConfig.load()
    ids = [c.result_id for c in candidates]
    if len(set(ids)) != len(ids):
        raise ValueError("candidate result ids must be unique")
    passed, gates = apply_gates(candidates, cfg)
    order = mmr_order(passed, n, cfg)
    ranked = [passed[i].result_id for i in order]
    gates["selected"] = len(ranked)
    return Selection(
        ranked=ranked,
        gates=gates,
        relevance={passed[i].result_id: relevance(passed[i]) for i in order},
    )


def select_results(
    candidates: Sequence[Scored], n: int, cfg: SelectionConfig | None = None
) -> tuple[list[str], dict[str, int]]:
    """The worker's entry point: (ranked result ids, count passing each gate)."""
    s = select(candidates, n, cfg)
    return s.ranked, s.gates


def coverage(
    candidates: Sequence[Scored], ids: Sequence[str], bin_degrees: float
) -> dict[str, int]:
    """Distinct styles and pose bins among the chosen ids (for reports and tests)."""
    by_id = {c.result_id: c for c in candidates}
    chosen = [by_id[i] for i in ids]
    bins = {
        (
            math.floor(float(c.scores.get("yaw", 0.0)) / bin_degrees),
            math.floor(float(c.scores.get("pitch", 0.0)) / bin_degrees),
        )
        for c in chosen
    }
    return {"styles": len({c.style_id for c in chosen}), "pose_bins": len(bins)}
