"""Filter.AnalyzeSelfies: the face stack's verdict on an upload set, photo by photo and whole.

Per photo (decoded with the same limits as the gateway, so a photo the gateway accepted is
never unreadable here): faces, face size, sharpness, exposure, head pose, the shared
selfie check's reasons, its identity descriptor. Over the set: which photos show someone
other than the majority (a LoRA trained on two people resembles neither), which are
near-duplicates of another (they add nothing and over-weight one shot), the identity
centre that later scores every generated image's likeness, and how varied the poses and
lighting are (a LoRA trained on 12 copies of one pose renders that pose only).

Blocking findings make a photo unusable; advisory ones (a visible hand, low variety) are
reported and change nothing. Every finding has a stable code and a sentence for a person.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headshots.v1 import internal_pb2
from headshots.v1.headshots_pb2 import PhotoFinding
from services.faces.duplicates import (
    duplicates_to_drop,
    load_duplicate_thresholds,
    near_duplicates,
)
from services.faces.face_stack import FaceStack, SelfieCheck
from services.faces.identity import (
    IdentityModel,
    different_person,
    distance_to_centre,
    identity_centre,
    load_identity_thresholds,
)
from services.faces.identity_align import align_chip
from services.faces.image_io import DecodeLimits, ImageError, decode_image
from services.faces.thresholds import load_section

# Sentences for the reason codes of FaceStack.check_selfie and of this module.
MESSAGES = {
    "NO_FACE": "no face was found",
    "MULTIPLE_FACES": "more than one face is in the photo; upload photos of one person alone",
    "PARTIAL_FACE": "the face is cut off by the edge of the photo",
    "FACE_TOO_SMALL": "the face is too small; take the photo closer",
    "BLURRED": "the face is blurred",
    "EYES_CLOSED": "the eyes are closed",
    "EYES_INCONSISTENT": "the eyes look in different directions",
    "HAND_VISIBLE": "a hand is in the photo; photos without hands train better",
    "UNDEREXPOSED": "the face is too dark",
    "OVEREXPOSED": "the face is too bright (washed out)",
    "DUPLICATE": "the photo is a near-duplicate of another one in the set",
    "DIFFERENT_PERSON": "the face does not look like the person in the other photos",
    "LOW_VARIETY": "the photos are very alike; vary pose, lighting and background",
}
ADVISORY = frozenset({"HAND_VISIBLE", "LOW_VARIETY"})
# Photos decoded and run through the face stack at once. A set is analysed in batches of
# this many and each photo's pixels are dropped once its chip is cut: the ONNX arenas grow
# to the largest batch they have seen, and 21 full photos in one batch took the filter from
# 0.2 to 2.4 GiB. The set verdict needs only chips, descriptors and the per-photo numbers.
ANALYSIS_BATCH = 4


@dataclass(frozen=True)
class SelfieThresholds:
    """The `selfies:` section of thresholds.yaml (each value's why is written there)."""

    min_exposure: float = 0.12
    max_exposure: float = 0.92
    pose_spread_degrees: float = 12.0
    lighting_spread: float = 0.08
    low_variety: float = 0.15
    low_variety_min_photos: int = 4

    @classmethod
    def load(cls, path: Path | None = None) -> SelfieThresholds:
        return load_section(cls, "selfies", path)


@dataclass
class _Photo:
    photo_id: str
    out: internal_pb2.SelfieAnalysis
    image: np.ndarray | None = None
    decoded: bool = False
    chip: np.ndarray | None = None
    embedding: np.ndarray | None = None

    def add(self, code: str, message: str | None = None, *, blocking: bool | None = None) -> None:
        if any(f.code == code for f in self.out.findings):
            return
        self.out.findings.append(
            PhotoFinding(
                code=code,
                message=message or MESSAGES.get(code, code),
                blocking=code not in ADVISORY if blocking is None else blocking,
            )
        )

    @property
    def usable(self) -> bool:
        return self.decoded and not any(f.blocking for f in self.out.findings)


class SelfieAnalyzer:
    def __init__(
        self,
        stack: FaceStack,
        identity: IdentityModel,
        *,
        limits: DecodeLimits | None = None,
        thresholds: SelfieThresholds | None = None,
        identity_config: Mapping[str, float] | None = None,
        duplicate_config: Mapping[str, float] | None = None,
    ) -> None:
        self.stack = stack
        self.identity = identity
        self.limits = limits or DecodeLimits()
        self.t = thresholds or SelfieThresholds.load()
        self.id_cfg = dict(identity_config or load_identity_thresholds())
        self.dup_cfg = dict(duplicate_config or load_duplicate_thresholds())

    @classmethod
    def load(
        cls, models_dir: Path, *, intra_op_threads: int = 0, prefer_gpu: bool = True
    ) -> SelfieAnalyzer:
        stack = FaceStack.load(models_dir, intra_op_threads=intra_op_threads, prefer_gpu=prefer_gpu)
        identity = IdentityModel.load(
            models_dir, intra_op_threads=intra_op_threads, prefer_gpu=prefer_gpu
        )
        return cls(stack, identity)

    # ------------------------------------------------------------------ per photo

    def analyze(self, items: Sequence[tuple[str, bytes]]) -> internal_pb2.AnalyzeSelfiesResponse:
        photos = [_Photo(pid, internal_pb2.SelfieAnalysis(photo_id=pid)) for pid, _ in items]
        for start in range(0, len(photos), ANALYSIS_BATCH):
            end = start + ANALYSIS_BATCH
            self._analyze_batch(photos[start:end], [data for _, data in items[start:end]])
        response = internal_pb2.AnalyzeSelfiesResponse()
        self._judge_set(photos, response.set)
        for p in photos:
            p.out.usable = p.usable
            response.photos.append(p.out)
        return response

    def _analyze_batch(self, photos: list[_Photo], data: list[bytes]) -> None:
        for p, raw in zip(photos, data, strict=True):
            try:
                p.image = decode_image(raw, self.limits)
                p.decoded = True
                p.out.height, p.out.width = p.image.shape[:2]
            except ImageError as err:
                p.add(err.code, err.message)
        decoded = [p for p in photos if p.image is not None]
        # One batched detector run per batch; the rest is per face.
        found = self.stack.detect([p.image for p in decoded]) if decoded else []
        for p, faces in zip(decoded, found, strict=True):
            self._check_photo(p, faces)
            p.image = None  # the chip is cut: the pixels are not needed any more
        with_face = [p for p in decoded if p.chip is not None]
        if with_face:
            emb = self.identity.embed(np.stack([p.chip for p in with_face]))
            for p, e in zip(with_face, emb, strict=True):
                p.embedding = e
                p.out.embedding.extend(float(x) for x in e)

    def _check_photo(self, p: _Photo, faces: list[Any]) -> None:
        assert p.image is not None
        check = self.stack.check_selfie(p.image, faces)
        for f in check.faces:
            x1, y1, x2, y2 = (float(v) for v in f.box)
            p.out.faces.add(
                x=x1,
                y=y1,
                width=x2 - x1,
                height=y2 - y1,
                score=float(f.score),
                landmarks=[float(v) for v in np.asarray(f.landmarks).ravel()],
            )
        for code in check.reasons:
            p.add(code, self._sentence(code, check))
        if not check.faces:
            return
        main = check.faces[0]
        p.out.face_size_px = float(main.width)
        p.out.sharpness = float(check.sharpness)
        p.out.exposure = float(check.exposure)
        yaw, pitch, roll = check.pose
        p.out.pose.yaw, p.out.pose.pitch, p.out.pose.roll = yaw, pitch, roll
        if check.mesh is not None:
            if check.exposure < self.t.min_exposure:
                p.add("UNDEREXPOSED", self._sentence("UNDEREXPOSED", check))
            elif check.exposure > self.t.max_exposure:
                p.add("OVEREXPOSED", self._sentence("OVEREXPOSED", check))
        # A chip (and so a descriptor) for every photo with a face, usable or not: the
        # distance of a refused photo to the set is still worth reporting.
        p.chip = align_chip(p.image, main.landmarks)

    def _sentence(self, code: str, check: SelfieCheck) -> str:
        t = self.stack.thresholds
        base = MESSAGES.get(code, code)
        if code == "BLURRED":
            return f"{base} (sharpness {check.sharpness:.0f}; at least {t.min_sharpness:.0f})"
        if code == "FACE_TOO_SMALL" and check.faces:
            return (
                f"{base} (eyes {check.faces[0].interocular:.0f} px apart; "
                f"at least {t.min_interocular_px:.0f})"
            )
        if code in ("UNDEREXPOSED", "OVEREXPOSED"):
            return f"{base} (brightness {check.exposure:.2f} of 1)"
        if code == "MULTIPLE_FACES":
            return f"{base} ({len(check.faces)} faces found)"
        return base

    # ------------------------------------------------------------------ the set

    def _judge_set(self, photos: list[_Photo], out: internal_pb2.SetAnalysis) -> None:
        candidates = [p for p in photos if p.usable and p.embedding is not None]
        # Identity first: a duplicate of a stranger is reported as the stranger.
        odd = (
            set(different_person(np.stack([p.embedding for p in candidates]), config=self.id_cfg))
            if len(candidates) >= 2
            else set()
        )
        # With two photos there is no majority to side with: both are reported, neither is
        # refused (the person fixes it by uploading more).
        blocking_odd = len(candidates) >= 3
        for i in sorted(odd):
            p = candidates[i]
            if blocking_odd:
                p.add("DIFFERENT_PERSON")
            else:
                p.add(
                    "DIFFERENT_PERSON", "the two photos do not look like one person", blocking=False
                )
            out.different_person.append(p.photo_id)
        same = [p for i, p in enumerate(candidates) if i not in odd or not blocking_odd]
        if same:
            chips = np.stack([p.chip for p in same])
            pairs = near_duplicates(
                chips, np.stack([p.embedding for p in same]), config=self.dup_cfg
            )
            dropped = duplicates_to_drop(pairs)
            for i in dropped:
                # Name a photo that stays in the set (a chain of copies names its first).
                partners = sorted(
                    pr.first for pr in pairs if pr.second == i and pr.first not in dropped
                )
                p, original = same[i], same[partners[0] if partners else i]
                p.out.duplicate_of = original.photo_id
                p.add("DUPLICATE", f"{MESSAGES['DUPLICATE']} ({original.photo_id})")
        usable = [p for p in photos if p.usable]
        out.usable_count = len(usable)
        if candidates:
            out.identity_consistency = 1.0 - len(odd) / len(candidates)
        if usable:
            keep = float(self.id_cfg.get("centre_keep_share", 0.7))
            centre = identity_centre(np.stack([p.embedding for p in usable]), keep=keep)
            out.reference_embedding.extend(float(x) for x in centre)
            for p in photos:
                if p.embedding is not None:
                    p.out.identity_distance = float(distance_to_centre(p.embedding, centre)[0])
        self._variety(usable, out)

    def _variety(self, usable: list[_Photo], out: internal_pb2.SetAnalysis) -> None:
        if len(usable) < 2:
            return
        poses = np.array([[p.out.pose.yaw, p.out.pose.pitch] for p in usable], np.float64)
        light = np.array([p.out.exposure for p in usable], np.float64)
        # Spread = standard deviation, scaled so that the spread of a good set (a few head
        # turns, indoor and outdoor light) reaches 1.
        out.pose_spread = float(min(1.0, np.sqrt(poses.var(0).sum()) / self.t.pose_spread_degrees))
        out.lighting_spread = float(min(1.0, light.std() / self.t.lighting_spread))
        out.variety_score = 0.5 * (out.pose_spread + out.lighting_spread)
        if len(usable) >= self.t.low_variety_min_photos and out.variety_score < self.t.low_variety:
            out.findings.append(
                PhotoFinding(code="LOW_VARIETY", message=MESSAGES["LOW_VARIETY"], blocking=False)
            )
