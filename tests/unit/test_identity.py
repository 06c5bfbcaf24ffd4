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

from bench.identity_calibration import (
    equal_error_rate,
    find_landmarks,
    load_fixture_faces,
    pair_distances,
    rates,
)
from services.faces.duplicates import duplicates_to_drop, near_duplicates
from services.faces.identity import (
    IdentityError,
    IdentityModel,
    different_person,
    euclidean,
    identity_centre,
    likeness_to,
    load_identity_thresholds,
)
from services.faces.identity_align import AlignmentError, align_chip, align_chips


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
    faces = load_fixture_faces(faces_dir, face_models)
    missing = [f.path.name for f in faces if f.landmarks is None]
    assert not missing, f"no face found in {missing}"
    chips = align_chips([f.image for f in faces], [f.landmarks for f in faces])
    return Embedded(
        names=[f.path.stem for f in faces],
        persons=[f.person for f in faces],
        groups=[f.group for f in faces],
        images=[f.image for f in faces],
        landmarks=[f.landmarks for f in faces],  # type: ignore[misc]
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
    dups = near_duplicates(fixture_set.chips, fixture_set.emb)
    kinds = pair_distances(
        fixture_set.emb,
        fixture_set.persons,
        fixture_set.groups,
        {(p.first, p.second) for p in dups},
    )
    genuine = kinds["genuine"]
    impostor = np.concatenate([v for k, v in kinds.items() if k != "genuine"])
    eer = equal_error_rate(genuine, impostor)
    cfg = load_identity_thresholds()
    at = rates(genuine, impostor, cfg["same_person_max_distance"])
    print(
        f"\nidentity: {genuine.size} genuine / {impostor.size} impostor pairs; "
        f"genuine max {genuine.max():.3f}, impostor min {impostor.min():.3f}; "
        f"EER {eer['eer']:.2%} at threshold {eer['threshold']:.3f}; "
        f"at configured {at['threshold']:.2f}: FAR {at['far']:.2%} FRR {at['frr']:.2%}"
    )
    assert genuine.size == 17 and impostor.size == 1158
    assert eer["eer"] <= 0.05
    assert at["frr"] <= 0.10 and at["far"] <= 0.05
    # Obama and Biden, the pair a mixed upload would really contain, never overlap.
    assert kinds["obama_x_biden"].min() > cfg["same_person_max_distance"] > genuine.max()


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
    biden = [fixture_set.index(b) for b in bidens]
    # Put the Biden photos in the middle, as an upload would mix them.
    order = obama[:3] + biden + obama[3:]
    flagged = different_person(fixture_set.emb[order])
    assert flagged == [3, 4]


def test_a_consistent_upload_has_no_different_person(fixture_set: Embedded) -> None:
    for person in ("obama", "biden"):
        idx = [i for i, p in enumerate(fixture_set.persons) if p == person]
        assert different_person(fixture_set.emb[idx]) == []
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
    uploads = [*images, exact, resized]
    found = find_landmarks(uploads, face_models)
    assert all(f is not None for f in found)
    chips = align_chips(uploads, [f[0] for f in found])  # type: ignore[index]
    pairs = near_duplicates(chips, model.embed(chips))
    assert {(p.first, p.second) for p in pairs} == {(2, 7), (6, 8)}, [p.why for p in pairs]
    assert duplicates_to_drop(pairs) == [7, 8]


def test_the_fixture_portrait_stored_twice_is_the_only_duplicate(fixture_set: Embedded) -> None:
    pairs = near_duplicates(fixture_set.chips, fixture_set.emb)
    named = {(fixture_set.names[p.first], fixture_set.names[p.second]) for p in pairs}
    # Obama's president and senate Bioguide files are one portrait, re-encoded.
    assert named == {("obama-president-bioguide", "obama-senate-bioguide")}


def test_hash_alone_catches_an_exact_copy_but_not_another_person(fixture_set: Embedded) -> None:
    a = fixture_set.chips[fixture_set.index("obama-2012-portrait")]
    b = fixture_set.chips[fixture_set.index("biden-vp-portrait")]
    pairs = near_duplicates(np.stack([a, b, a.copy()]))
    assert [(p.first, p.second) for p in pairs] == [(0, 2)]


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
