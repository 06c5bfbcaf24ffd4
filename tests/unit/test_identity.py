"""Identity on the real fixture photos: embedding, separation, consensus, near-duplicates.

The descriptor ONNX is built by models.face_stack.descriptor.build when missing (cached
under var/models/face); CenterFace comes from the face-stack build.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.identity_eval import equal_error_rate
from services.faces.duplicates import duplicates_to_drop, near_duplicates
from services.faces.face_detector import FaceDetector
from services.faces.identity import (
    IdentityError,
    IdentityModel,
    centre_limit,
    consensus,
    different_person,
    euclidean,
    identity_centre,
    likeness_to,
    load_identity_thresholds,
)
from services.faces.identity_align import AlignmentError, align_chip, align_chips

GROUPS = ("obama", "biden", "others")


def find_landmarks(images: list[np.ndarray], face_models: Path) -> list[np.ndarray | None]:
    """Five landmarks of the largest face in each image (detected alone, then refined), as
    AnalyzeSelfies cuts its chips."""
    from services.faces.onnx_runtime import create_session

    detector = FaceDetector(create_session(face_models / "centerface.onnx", prefer_gpu=False))
    found = [detector.detect([im])[0] for im in images]
    return [detector.refine(im, f[0]) if f else None for im, f in zip(images, found, strict=True)]


def load_rgb(path: Path) -> np.ndarray:
    from PIL import ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8)


@dataclass
class Embedded:
    names: list[str]
    persons: list[str]
    groups: list[str]
    images: list[np.ndarray]
    landmarks: list[np.ndarray]
    chips: np.ndarray
    emb: np.ndarray

    def index(self, stem: str) -> int:
        return self.names.index(stem)


@pytest.fixture(scope="module")
def face_models(models_dir: Path) -> Path:
    out = models_dir / "face"
    if not (out / "centerface.onnx").is_file():
        from models.face_stack.build import DEFAULT_CACHE, build_centerface

        out.mkdir(parents=True, exist_ok=True)
        build_centerface(out, DEFAULT_CACHE / "wheels")
    if not (out / "descriptor.onnx").is_file():
        from models.face_stack.descriptor import build

        build(out)
    return out


@pytest.fixture(scope="module")
def model(face_models: Path) -> IdentityModel:
    return IdentityModel.load(face_models)


@pytest.fixture(scope="module")
def fixture_set(faces_dir: Path, face_models: Path, model: IdentityModel) -> Embedded:
    paths = [p for g in GROUPS for p in sorted((faces_dir / g).glob("*.jpg"))]
    images = [load_rgb(p) for p in paths]
    landmarks = find_landmarks(images, face_models)
    missing = [p.name for p, lm in zip(paths, landmarks, strict=True) if lm is None]
    assert not missing, f"no face found in {missing}"
    chips = align_chips(images, landmarks)  # type: ignore[arg-type]
    groups = [p.parent.name for p in paths]
    return Embedded(
        names=[p.stem for p in paths],
        persons=[g if g != "others" else p.stem for g, p in zip(groups, paths, strict=True)],
        groups=groups,
        images=images,
        landmarks=landmarks,  # type: ignore[arg-type]
        chips=chips,
        emb=model.embed(chips),
    )


def test_every_fixture_photo_gives_one_descriptor(fixture_set: Embedded) -> None:
    assert fixture_set.emb.shape == (49, 128)
    assert np.isfinite(fixture_set.emb).all()
    norms = np.linalg.norm(fixture_set.emb, axis=1)
    assert (norms > 0.1).all(), "a dead (all-zero) descriptor means a broken chip or model"


def test_batched_embedding_equals_one_by_one(fixture_set: Embedded, model: IdentityModel) -> None:
    one = np.concatenate([model.embed(fixture_set.chips[i : i + 1]) for i in range(4)])
    np.testing.assert_allclose(one, fixture_set.emb[:4], atol=1e-4)


def test_same_person_pairs_are_closer_than_different_person_pairs(
    fixture_set: Embedded,
) -> None:
    n = len(fixture_set.names)
    genuine, impostor, obama_biden = [], [], []
    for i in range(n):
        for j in range(i + 1, n):
            a, b = fixture_set.names[i], fixture_set.names[j]
            both_obama = fixture_set.persons[i] == fixture_set.persons[j] == "obama"
            if both_obama and "bioguide" in a and "bioguide" in b:
                continue  # one portrait stored twice: a copy, not a second photo
            d = float(euclidean(fixture_set.emb[i], fixture_set.emb[j])[0])
            same = fixture_set.persons[i] == fixture_set.persons[j]
            (genuine if same else impostor).append(d)
            if {fixture_set.persons[i], fixture_set.persons[j]} == {"obama", "biden"}:
                obama_biden.append(d)
    g, m = np.array(genuine), np.array(impostor)
    eer, _ = equal_error_rate(g, m)
    limit = load_identity_thresholds()["same_person_max_distance"]
    assert g.size == 17 and m.size == 1158
    assert eer <= 0.05
    assert np.mean(g > limit) <= 0.10 and np.mean(m <= limit) <= 0.02
    # Obama and Biden, the pair a mixed upload would really contain, never overlap.
    assert min(obama_biden) > limit
    # Every genuine pair is within the limit but one: Biden's Senate portrait from the 1970s
    # against his 2013 portrait (0.57), 30+ years apart.
    assert np.sum(g > limit) <= 1 and np.sort(g)[-2] < limit


@pytest.mark.parametrize(
    "bidens",
    [
        ("biden-2010-blue-room", "biden-vp-portrait"),
        ("biden-2010-blue-room", "biden-senate-bioguide"),
        ("biden-senate-bioguide", "biden-vp-portrait"),
    ],
)
def test_two_biden_photos_among_six_obama_are_flagged(
    fixture_set: Embedded, bidens: tuple[str, str]
) -> None:
    obama = [i for i, p in enumerate(fixture_set.persons) if p == "obama"]
    assert len(obama) == 6
    obama.remove(fixture_set.index("obama-president-bioguide"))  # a copy of the senate one
    biden = [fixture_set.index(b) for b in bidens]
    # Put the Biden photos in the middle, as an upload would mix them.
    order = obama[:3] + biden + obama[3:]
    flagged = different_person(fixture_set.emb[order])
    assert flagged == [3, 4]


def test_a_majority_of_strangers_is_refused_as_a_whole(fixture_set: Embedded) -> None:
    """Eleven official portraits of eleven people: no one is the majority, nothing trains."""
    strangers = [i for i, g in enumerate(fixture_set.groups) if g == "others"][:11]
    verdict = consensus(fixture_set.emb[strangers])
    assert not verdict.consistent
    assert verdict.different == list(range(11))


def test_two_people_in_equal_shares_are_refused(fixture_set: Embedded) -> None:
    obama = [fixture_set.index(n) for n in ("obama-2012-portrait", "obama-2009-congress")]
    biden = [fixture_set.index(n) for n in ("biden-vp-portrait", "biden-2010-blue-room")]
    verdict = consensus(fixture_set.emb[obama + biden])
    assert not verdict.consistent


def test_reported_distances_are_the_ones_judged(fixture_set: Embedded) -> None:
    obama = [i for i, p in enumerate(fixture_set.persons) if p == "obama"][:5]
    intruders = [fixture_set.index("biden-vp-portrait"), fixture_set.index("021139")]
    verdict = consensus(fixture_set.emb[obama + intruders])
    over = [i for i in range(7) if verdict.distances[i] > verdict.limits[i]]
    assert verdict.different == over == [5, 6]
    # Members are judged against the mean of the other members, intruders against all.
    pair = load_identity_thresholds()["same_person_max_distance"]
    k = len(verdict.members)
    assert verdict.members == [0, 1, 2, 3, 4]
    assert verdict.limits[0] == pytest.approx(centre_limit(pair, k - 1))
    assert verdict.limits[5] == pytest.approx(centre_limit(pair, k))


def test_centre_limit_is_the_pair_limit_for_one_photo_and_shrinks_with_more() -> None:
    assert centre_limit(0.6, 1) == pytest.approx(0.6)
    assert centre_limit(0.6, 4) < centre_limit(0.6, 2) < 0.6
    assert centre_limit(0.6, 10_000) == pytest.approx(0.6 / np.sqrt(2), 1e-3)


def test_a_consistent_upload_has_no_different_person(fixture_set: Embedded) -> None:
    obama = [i for i, p in enumerate(fixture_set.persons) if p == "obama"]
    assert different_person(fixture_set.emb[obama]) == []
    # Biden's three portraits span 30+ years and the descriptor does not link the 1970s
    # Senate portrait with the 2013 one: at most one of those two is reported, never the
    # 2010 photo that matches both.
    biden = [i for i, p in enumerate(fixture_set.persons) if p == "biden"]
    flagged = [fixture_set.names[biden[i]] for i in different_person(fixture_set.emb[biden])]
    assert len(flagged) <= 1 and "biden-2010-blue-room" not in flagged
    pair = [fixture_set.index("obama-2012-portrait"), fixture_set.index("biden-vp-portrait")]
    assert different_person(fixture_set.emb[pair]) == [0, 1]  # no majority: both named
    same = [fixture_set.index("obama-2012-portrait"), fixture_set.index("obama-2009-congress")]
    assert different_person(fixture_set.emb[same]) == []


def test_centre_is_not_dragged_by_an_outlier(fixture_set: Embedded) -> None:
    obama = [i for i, p in enumerate(fixture_set.persons) if p == "obama"]
    intruder = fixture_set.index("biden-vp-portrait")
    clean = identity_centre(fixture_set.emb[obama])
    mixed = identity_centre(fixture_set.emb[[*obama, intruder]])
    naive = fixture_set.emb[[*obama, intruder]].mean(0)
    assert euclidean(mixed, clean)[0] < 0.05
    assert euclidean(mixed, clean)[0] < euclidean(naive, clean)[0]


def test_likeness_to_the_selfies_ranks_the_person_first(fixture_set: Embedded) -> None:
    obama = [i for i, p in enumerate(fixture_set.persons) if p == "obama"]
    held_out, selfies = obama[0], obama[1:]
    centre = identity_centre(fixture_set.emb[selfies])
    others = [i for i, p in enumerate(fixture_set.persons) if p != "obama"]
    own = likeness_to(fixture_set.emb[[held_out]], centre)[0]
    strangers = likeness_to(fixture_set.emb[others], centre)
    assert 0.0 <= strangers.min() and own <= 1.0
    assert own > 0.5 > strangers.max()


def _reencode(image: np.ndarray, scale: float, quality: int) -> np.ndarray:
    im = Image.fromarray(image)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def test_exact_and_resized_duplicates_are_caught(
    fixture_set: Embedded, face_models: Path, model: IdentityModel
) -> None:
    distinct = [
        "obama-2009-congress",
        "obama-2010-blue-room",
        "obama-2012-portrait",
        "obama-briefing-room",
        "obama-president-bioguide",
        "biden-2010-blue-room",
        "biden-vp-portrait",
    ]
    images = [fixture_set.images[fixture_set.index(n)] for n in distinct]
    exact = images[2].copy()  # obama-2012-portrait uploaded twice
    resized = _reencode(images[6], 0.5, 80)  # biden-vp-portrait at half size, recompressed
    h, w = images[6].shape[:2]  # biden-vp-portrait, re-cropped and re-encoded
    recropped = _reencode(images[6][h // 20 :, w // 16 : w - w // 16], 1.0, 85)
    uploads = [*images, exact, resized, recropped]
    found = find_landmarks(uploads, face_models)
    assert all(f is not None for f in found)
    chips = align_chips(uploads, found)  # type: ignore[arg-type]
    pairs = near_duplicates(chips, model.embed(chips))
    found = {(p.first, p.second) for p in pairs}
    copies = {(2, 7), (6, 8), (6, 9)}
    assert copies <= found <= copies | {(8, 9)}, [p.why for p in pairs]
    assert duplicates_to_drop(pairs) == [7, 8, 9]


def test_the_fixture_portrait_stored_twice_is_the_only_duplicate(fixture_set: Embedded) -> None:
    pairs = near_duplicates(fixture_set.chips, fixture_set.emb)
    named = {(fixture_set.names[p.first], fixture_set.names[p.second]) for p in pairs}
    # Obama's president and senate Bioguide files are one portrait, re-encoded.
    assert named == {("obama-president-bioguide", "obama-senate-bioguide")}


def test_bad_input_is_refused_plainly(model: IdentityModel, fixture_set: Embedded) -> None:
    with pytest.raises(IdentityError, match="N x 150 x 150 x 3"):
        model.embed(np.zeros((2, 112, 112, 3), np.uint8))
    with pytest.raises(IdentityError, match="uint8"):
        model.embed(np.zeros((1, 150, 150, 3), np.float32))
    with pytest.raises(IdentityError, match="batch"):
        model.embed(np.zeros((150, 150, 3), np.uint8))
    assert model.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(AlignmentError, match="5x2"):
        align_chip(fixture_set.images[0], np.zeros((4, 2)))
    with pytest.raises(AlignmentError, match="one point"):
        align_chip(fixture_set.images[0], np.ones((5, 2)))
    with pytest.raises(IdentityError, match="NaN"):
        different_person(np.full((3, 128), np.nan))
