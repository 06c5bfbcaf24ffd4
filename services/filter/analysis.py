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

Each photo is analysed once. What the set's verdict needs of a photo (its own findings,
descriptor, near-copy signature, pose, exposure) comes back as its `SelfieFacts`; a caller
that keeps them sends them instead of the image when the set grows, and the verdict over
facts is the verdict over the images they came from (`analyze_inputs`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from headshots.v1 import internal_pb2
from headshots.v1.headshots_pb2 import PhotoFinding
from services.faces.duplicates import (
    DETAIL_SIZE,
    duplicate_of,
    load_duplicate_thresholds,
    near_duplicates,
)
from services.faces.face_stack import FaceStack, SelfieCheck
from services.faces.identity import (
    DIM,
    IdentityModel,
    consensus,
    distance_to_centre,
    load_identity_thresholds,
)
from services.faces.image_io import DecodeLimits, ImageError, decode_image
from services.faces.parallel import ImagePool
from services.faces.thresholds import load_section
from services.filter.settings import FilterSettings

# Sentences for the reason codes of FaceStack.check_selfie and of this module.
MESSAGES = {
    "NO_FACE": "no face was found",
    "MULTIPLE_FACES": "more than one face is in the photo; upload photos of one person alone",
    "PARTIAL_FACE": "the face is cut off by the edge of the photo",
    "FACE_TOO_SMALL": "the face is too small; take the photo closer",
    "BLURRED": "the face is blurred",
    "EYES_CLOSED": "the eyes are closed",
    "EYES_INCONSISTENT": "the two eyes look different from each other (direction, iris or "
    "sharpness); if that is how they look, keep the photo",
    "HAND_VISIBLE": "a hand is in the photo; photos without hands train better",
    "UNDEREXPOSED": "the face is too dark",
    "OVEREXPOSED": "the face is too bright (washed out)",
    "DUPLICATE": "the photo is a near-duplicate of another one in the set",
    "DIFFERENT_PERSON": "the face does not look like the person in the other photos",
    "LOW_VARIETY": "the photos are very alike; vary pose, lighting and background",
    "TURNED_AWAY": "the head is turned to the side; photos facing the camera or turned "
    "a little train better",
    "PROFILE": "the face is seen from the side (a profile); it is kept but not counted "
    "toward the photos needed: add a photo facing the camera",
    "NO_CONSISTENT_PERSON": "no one person is in most of the photos; upload photos of "
    "one person only",
}
# EYES_INCONSISTENT is advice on a selfie: the rules (gaze apart, iris colour or height,
# one eye smudged) are for generation artefacts; on a real person they misfire on 2 of 161
# plain frontal photos of the identity set, and a squint or two iris colours are that
# person's own eyes, which must not cost them a photo.
ADVISORY = frozenset({"HAND_VISIBLE", "LOW_VARIETY", "TURNED_AWAY", "PROFILE", "EYES_INCONSISTENT"})
# Photos decoded and run through the face stack at once. A set is analysed in batches of
# this many and each photo's pixels are dropped once its chip is cut: the ONNX arenas grow
# to the largest batch they have seen, and 21 full photos in one batch took the filter from
# 0.2 to 2.4 GiB. The set verdict needs only chips, descriptors and the per-photo numbers.
# (A photo's result does not depend on its batch: the detector letterboxes each image alone.)
ANALYSIS_BATCH = 4
# Bump when a change to the face stack, the descriptor or the signature makes stored facts
# incomparable with fresh ones.
FACTS_VERSION = 1
SIGNATURE_BYTES = DETAIL_SIZE * DETAIL_SIZE


class FactsError(ValueError):
    """Facts the analyzer cannot use; `stale` when they are of another FACTS_VERSION."""

    def __init__(self, photo_id: str, message: str, *, stale: bool = False) -> None:
        super().__init__(f"photo {photo_id}: {message}")
        self.photo_id = photo_id
        self.stale = stale


@dataclass(frozen=True)
class SelfieThresholds:
    """The `selfies:` section of thresholds.yaml (each value's why is written there)."""

    min_exposure: float = 0.12
    max_exposure: float = 0.92
    pose_spread_degrees: float = 12.0
    lighting_spread: float = 0.08
    low_variety: float = 0.15
    low_variety_min_photos: int = 4
    turned_yaw_degrees: float = 30.0
    profile_yaw_degrees: float = 60.0
    profile_landmark_asymmetry: float = 0.9

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
    profile: bool = False
    facts: internal_pb2.SelfieFacts | None = None

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


def signature_of(chip: np.ndarray) -> bytes:
    """The near-copy signature of an aligned chip: grey, DETAIL_SIZE px square, box-filtered.
    It is the first step of `duplicates.detail_image`, so the detail image of
    `chip_of_signature(signature_of(chip))` equals the chip's own, to the pixel."""
    grey = Image.fromarray(np.ascontiguousarray(chip, dtype=np.uint8)).convert("L")
    return grey.resize((DETAIL_SIZE, DETAIL_SIZE), Image.Resampling.BOX).tobytes()


def chip_of_signature(signature: bytes) -> np.ndarray:
    """A signature as a chip `near_duplicates` takes (three equal channels: grey again)."""
    grey = np.frombuffer(signature, np.uint8).reshape(DETAIL_SIZE, DETAIL_SIZE)
    return np.repeat(grey[:, :, None], 3, axis=2)


def landmark_asymmetry(landmarks: np.ndarray) -> float:
    """How far the nose sits off the eyes' midline, as a share of half the eye distance
    along the eye line: 0 facing the camera, about 0.5 at a 30-degree turn, 1 or more when
    the nose reaches past an eye (a profile)."""
    pts = np.asarray(landmarks, np.float64)
    eye_l, eye_r, nose = pts[0], pts[1], pts[2]
    axis = eye_r - eye_l
    half = float(np.linalg.norm(axis)) / 2
    if half < 1e-6:
        return float("inf")
    along = float(np.dot(nose - (eye_l + eye_r) / 2, axis / (2 * half)))
    return abs(along) / half


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
        pool: ImagePool | None = None,
    ) -> None:
        self.stack = stack
        self.identity = identity
        self.pool = pool or ImagePool()
        self.limits = limits or DecodeLimits()
        self.t = thresholds or SelfieThresholds.load()
        self.id_cfg = dict(identity_config or load_identity_thresholds())
        self.dup_cfg = dict(duplicate_config or load_duplicate_thresholds())

    @classmethod
    def load(
        cls,
        models_dir: Path,
        *,
        intra_op_threads: int = 0,
        prefer_gpu: bool = True,
        image_threads: int = 1,
    ) -> SelfieAnalyzer:
        stack = FaceStack.load(models_dir, intra_op_threads=intra_op_threads, prefer_gpu=prefer_gpu)
        identity = IdentityModel.load(
            models_dir, intra_op_threads=intra_op_threads, prefer_gpu=prefer_gpu
        )
        return cls(stack, identity, pool=ImagePool(image_threads))

    @classmethod
    def served(
        cls, settings: FilterSettings, models_dir: Path | None = None, *, prefer_gpu: bool = True
    ) -> SelfieAnalyzer:
        """As the filter service runs it: HS_FILTER_IMAGE_THREADS photos side by side, each
        model run on HS_FILTER_INTRA_OP_THREADS cores (the service and the benches)."""
        return cls.load(
            models_dir or settings.models_path(),
            intra_op_threads=settings.intra_op_threads,
            image_threads=settings.image_threads,
            prefer_gpu=prefer_gpu,
        )

    # ------------------------------------------------------------------ per photo

    def analyze(self, items: Sequence[tuple[str, bytes]]) -> internal_pb2.AnalyzeSelfiesResponse:
        return self.judge(self.analyze_photos(items))

    def analyze_inputs(
        self, inputs: Sequence[internal_pb2.SelfieInput]
    ) -> internal_pb2.AnalyzeSelfiesResponse:
        """The set's verdict over photos given as images (analysed now; their facts are
        returned with their verdicts) or as the facts of an earlier analysis, in the order
        given. Raises `FactsError` for facts it cannot use."""
        photos: list[_Photo | None] = [
            self.photo_of_facts(x.photo_id, x.facts) if x.WhichOneof("source") == "facts" else None
            for x in inputs
        ]
        fresh = [i for i, p in enumerate(photos) if p is None]
        analysed = self.analyze_photos([(inputs[i].photo_id, inputs[i].image) for i in fresh])
        for i, p in zip(fresh, analysed, strict=True):
            photos[i] = p
        judged = [p for p in photos if p is not None]
        response = self.judge(judged)
        for i, p in zip(fresh, analysed, strict=True):
            if p.facts is not None:
                response.photos[i].facts.CopyFrom(p.facts)
        return response

    def photo_of_facts(self, photo_id: str, facts: internal_pb2.SelfieFacts) -> _Photo:
        """A photo as its stored facts describe it, ready for the set's verdict."""
        if facts.version != FACTS_VERSION:
            raise FactsError(
                photo_id,
                f"facts of version {facts.version}; this filter measures version "
                f"{FACTS_VERSION}: send the image",
                stale=True,
            )
        has_face = bool(facts.embedding)
        if has_face and len(facts.embedding) != DIM:
            raise FactsError(
                photo_id, f"a descriptor has {DIM} numbers, not {len(facts.embedding)}"
            )
        if has_face != (len(facts.signature) == SIGNATURE_BYTES):
            raise FactsError(
                photo_id, f"a face needs a descriptor and a {SIGNATURE_BYTES}-byte signature"
            )
        out = internal_pb2.SelfieAnalysis(
            photo_id=photo_id,
            findings=list(facts.findings),
            pose=facts.pose,
            exposure=facts.exposure,
            embedding=list(facts.embedding),
        )
        p = _Photo(photo_id, out, decoded=True, profile=facts.profile, facts=facts)
        if has_face:
            p.embedding = np.asarray(facts.embedding, np.float32)
            p.chip = chip_of_signature(facts.signature)
        return p

    def analyze_photos(self, items: Sequence[tuple[str, bytes]]) -> list[_Photo]:
        """Everything about each photo on its own. Each photo is detected, cut and described
        alone (batched runs only group same-shape tensors), so a photo's result never
        depends on the other photos of the call."""
        return self.pool.map_batch(self._analyze_part, items)

    def _analyze_part(self, items: Sequence[tuple[str, bytes]]) -> list[_Photo]:
        photos = [_Photo(pid, internal_pb2.SelfieAnalysis(photo_id=pid)) for pid, _ in items]
        # The pool's threads share the memory bound: ANALYSIS_BATCH photos decoded at once.
        step = max(1, ANALYSIS_BATCH // self.pool.workers)
        for start in range(0, len(photos), step):
            end = start + step
            self._analyze_batch(photos[start:end], [data for _, data in items[start:end]])
        return photos

    def _analyze_batch(self, photos: list[_Photo], data: list[bytes]) -> None:
        for p, raw in zip(photos, data, strict=True):
            try:
                p.image = decode_image(raw, self.limits)
                p.decoded = True
                p.out.height, p.out.width = p.image.shape[:2]
            except ImageError as err:
                p.add(err.code, err.message)
        decoded = [p for p in photos if p.image is not None]
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
        for p in decoded:
            p.facts = self._facts(p)

    def _facts(self, p: _Photo) -> internal_pb2.SelfieFacts:
        """What the set's verdict will need of this photo, before the set adds findings.
        The chip itself is kept only as its signature: enough to tell a copy, and the
        verdict over the signature is the verdict over the chip."""
        facts = internal_pb2.SelfieFacts(
            version=FACTS_VERSION,
            findings=list(p.out.findings),
            pose=p.out.pose,
            exposure=p.out.exposure,
            profile=p.profile,
        )
        if p.chip is not None and p.embedding is not None:
            facts.embedding.extend(p.out.embedding)
            facts.signature = signature_of(p.chip)
            # The set's verdict compares signatures, here as with stored facts: a set of
            # fresh photos and a set of stored ones are judged on the same numbers.
            p.chip = chip_of_signature(facts.signature)
            p.embedding = np.asarray(facts.embedding, np.float32)
        return facts

    def judge(self, photos: Sequence[_Photo]) -> internal_pb2.AnalyzeSelfiesResponse:
        """The set's verdict over photos from `analyze_photos` (each used once: findings are
        added to them)."""
        response = internal_pb2.AnalyzeSelfiesResponse()
        self._judge_set(list(photos), response.set)
        for p in photos:
            p.out.usable = p.usable
            response.photos.append(p.out)
        return response

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
        self._pose(p, yaw, main.landmarks)
        if check.mesh is not None:
            if check.exposure < self.t.min_exposure:
                p.add("UNDEREXPOSED", self._sentence("UNDEREXPOSED", check))
            elif check.exposure > self.t.max_exposure:
                p.add("OVEREXPOSED", self._sentence("OVEREXPOSED", check))
        # A chip (and so a descriptor) for every photo with a face, usable or not: the
        # distance of a refused photo to the set is still worth reporting.
        p.chip = self.stack.identity_chip(p.image, main)

    def _pose(self, p: _Photo, yaw: float, landmarks: np.ndarray) -> None:
        """Head turn findings, both advisory. The mesh's yaw saturates before a full profile,
        so the five landmarks vote too: in a profile the nose lies outside the eyes."""
        asym = landmark_asymmetry(landmarks)
        if abs(yaw) >= self.t.profile_yaw_degrees or asym >= self.t.profile_landmark_asymmetry:
            p.profile = True
            p.add("PROFILE", f"{MESSAGES['PROFILE']} (head turned {abs(yaw):.0f} degrees)")
        elif abs(yaw) >= self.t.turned_yaw_degrees:
            p.add("TURNED_AWAY", f"{MESSAGES['TURNED_AWAY']} (head turned {abs(yaw):.0f} degrees)")

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
        # Identity first: a duplicate of a stranger is reported as the stranger. Profiles
        # are judged but do not vote on who the person is.
        verdict = (
            consensus(
                np.stack([p.embedding for p in candidates]),
                config=self.id_cfg,
                eligible=np.array([not p.profile for p in candidates]),
            )
            if candidates
            else None
        )
        odd = set(verdict.different) if verdict is not None and len(candidates) >= 2 else set()
        # With two photos there is no majority to side with: both are reported, neither is
        # refused (the person fixes it by uploading more).
        blocking_odd = len(candidates) >= 3
        if verdict is not None:
            for i, p in enumerate(candidates):
                p.out.identity_distance = float(verdict.distances[i])
        if verdict is not None and not verdict.consistent and blocking_odd:
            out.findings.append(
                PhotoFinding(
                    code="NO_CONSISTENT_PERSON",
                    message=MESSAGES["NO_CONSISTENT_PERSON"],
                    blocking=True,
                )
            )
        for i in sorted(odd):
            p = candidates[i]
            if not blocking_odd:
                p.add(
                    "DIFFERENT_PERSON", "the two photos do not look like one person", blocking=False
                )
            elif verdict is not None and not verdict.consistent:
                p.add("DIFFERENT_PERSON", MESSAGES["NO_CONSISTENT_PERSON"])
            else:
                assert verdict is not None
                p.add(
                    "DIFFERENT_PERSON",
                    f"{MESSAGES['DIFFERENT_PERSON']} (distance {verdict.distances[i]:.2f}; "
                    f"the same person is within {verdict.limits[i]:.2f})",
                )
            out.different_person.append(p.photo_id)
        same = [p for i, p in enumerate(candidates) if i not in odd or not blocking_odd]
        if same:
            chips = np.stack([p.chip for p in same])
            pairs = near_duplicates(
                chips, np.stack([p.embedding for p in same]), config=self.dup_cfg
            )
            for i, kept in duplicate_of(pairs).items():
                p, original = same[i], same[kept]
                p.out.duplicate_of = original.photo_id
                p.add("DUPLICATE", f"{MESSAGES['DUPLICATE']} ({original.photo_id})")
        usable = [p for p in photos if p.usable]
        # A profile trains badly: it may stay in the set but does not count toward the
        # number of photos an order needs.
        out.usable_count = len([p for p in usable if not p.profile])
        if candidates:
            out.identity_consistency = 1.0 - len(odd) / len(candidates)
        if verdict is not None and usable and (verdict.consistent or not blocking_odd):
            centre = verdict.centre
            out.reference_embedding.extend(float(x) for x in centre)
            judged = {id(p) for p in candidates}
            for p in photos:
                if p.embedding is not None and id(p) not in judged:
                    # Photos refused for other reasons: still worth a distance to the person.
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
