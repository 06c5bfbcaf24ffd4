"""One way to cut an identity chip: selfies, candidates and the trainer's renders compare.

The order's reference is the centre of the selfies' descriptors (AnalyzeSelfies); every
generated candidate (filter scoring) and every validation render (trainer likeness) is
compared with it. If the two sides were cut from differently measured landmarks, the same
face would sit at a distance from itself and every likeness would be biased. Real photos
through the real models: tests/fixtures/faces and tests/fixtures/identity.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache

import numpy as np
import pytest
from PIL import Image

from services.faces.identity import IdentityModel, load_identity_thresholds
from services.faces.image_io import decode_image
from services.filter.analysis import SelfieAnalyzer
from services.filter.scoring import CandidateScorer
from services.trainer.likeness import LikenessScorer
from services.trainer.preprocess import CropGeometry, Preprocessor
from tests.conftest import FIXTURES
from tests.support.face_stack import built_models, face_stack

# Paths below are relative to tests/fixtures.
ROOT = FIXTURES.parent
IDENTITY = ROOT / "identity"
# Photos of very different sizes and framings: the detector's raw landmarks move with them.
PHOTOS = [
    "faces/obama/obama-2012-portrait.jpg",  # 1434 x 2333, half-body
    "faces/obama/obama-senate-bioguide.jpg",  # 167 x 225
    "faces/biden/biden-2010-blue-room.jpg",
    "identity/photos/021502-shot2.jpg",
]


@lru_cache(maxsize=1)
def analyzer() -> SelfieAnalyzer:
    return SelfieAnalyzer(face_stack(), IdentityModel.load(built_models(), intra_op_threads=2))


@lru_cache(maxsize=1)
def scorer() -> CandidateScorer:
    return CandidateScorer(face_stack(), analyzer().identity)


def raw(relative: str) -> bytes:
    return (ROOT / relative).read_bytes()


def selfie_descriptor(data: bytes) -> np.ndarray:
    p = analyzer().analyze_photos([("p", data)])[0]
    assert p.embedding is not None
    return p.embedding


def render_512(relative: str) -> bytes:
    """A photo as a generator delivers a headshot: a 512-px square PNG."""
    img = Image.open(ROOT / relative).convert("RGB")
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    out = io.BytesIO()
    img.crop((left, top, left + side, top + side)).resize((512, 512)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("relative", PHOTOS)
def test_a_photo_has_one_descriptor_whichever_path_describes_it(relative: str) -> None:
    data = raw(relative)
    selfie = selfie_descriptor(data)
    candidate = scorer().score([data], None)[0].embedding
    assert candidate is not None
    np.testing.assert_allclose(candidate, selfie, atol=1e-4)
    # The trainer's reference when a job carries none: the preprocessed photo's chip.
    crops = Preprocessor(face_stack(), CropGeometry(256)).run([("p", data)]).crops
    assert len(crops) == 1 and crops[0].identity_chip is not None
    trained = analyzer().identity.embed(crops[0].identity_chip[None])[0]
    np.testing.assert_allclose(trained, selfie, atol=1e-4)
    # The trainer's checkpoint likeness of that photo against its own selfie descriptor is
    # the likeness of distance 0 (1 / (1 + exp(-0.51 / 0.05)) = 0.99996).
    own = LikenessScorer(face_stack(), analyzer().identity, selfie).score([decode_image(data)])
    assert own.faces_found == 1 and own.likeness > 0.9999


def test_renders_of_the_person_are_alike_and_of_others_not_on_both_likeness_paths() -> None:
    """Reference from three selfies, as AnalyzeSelfies builds it; candidates are 512-px
    renders of other shots of that person and of other people."""
    selfies = ["faces/obama/obama-2009-congress.jpg", "faces/obama/obama-2010-blue-room.jpg"]
    selfies.append("faces/obama/obama-senate-bioguide.jpg")
    response = analyzer().analyze([(n, raw(n)) for n in selfies])
    reference = np.asarray(response.set.reference_embedding, np.float32)
    same = ["faces/obama/obama-2012-portrait.jpg", "faces/obama/obama-briefing-room.jpg"]
    others = [
        "faces/biden/biden-vp-portrait.jpg",
        "faces/others/020145.jpg",
        "identity/photos/020119-shot2.jpg",
    ]
    renders = [render_512(n) for n in same + others]
    filter_likeness = [v.scores["likeness"] for v in scorer().score(renders, reference)]
    trainer = LikenessScorer(face_stack(), analyzer().identity, reference)
    trainer_likeness = [trainer.score([decode_image(r)]).likeness for r in renders]
    np.testing.assert_allclose(trainer_likeness, filter_likeness, atol=1e-4)
    min_likeness = scorer().sel.min_likeness
    assert min(filter_likeness[: len(same)]) > min_likeness, filter_likeness
    assert max(filter_likeness[len(same) :]) < min_likeness, filter_likeness


def identity_pairs() -> list[tuple[str, str]]:
    """(shot1, shot2) of the first eight people in the identity set (mixed populations)."""
    shots: dict[str, dict[str, str]] = {}
    with (IDENTITY / "manifest.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["label"] == "genuine":
                shots.setdefault(row["person"], {})[row["shot"][-5:]] = row["file"]
    return [(s["shot1"], s["shot2"]) for s in shots.values() if len(s) == 2][:8]


def test_scored_photos_of_the_person_stay_within_the_limit_and_others_beyond_it() -> None:
    """A selfie of one Congress against a scored portrait of another Congress: the same
    person within `same_person_max_distance`, the next person in the list beyond it."""
    limit = load_identity_thresholds()["same_person_max_distance"]
    pairs = identity_pairs()
    assert len(pairs) == 8
    refs = [selfie_descriptor((IDENTITY / a).read_bytes()) for a, _ in pairs]
    verdicts = scorer().score([(IDENTITY / b).read_bytes() for _, b in pairs], None)
    cands = [v.embedding for v in verdicts]
    for i, ref in enumerate(refs):
        assert cands[i] is not None
        genuine = float(np.linalg.norm(cands[i] - ref))
        other = float(np.linalg.norm(cands[(i + 1) % len(pairs)] - ref))
        assert genuine <= limit < other, (pairs[i], genuine, other)


def test_no_service_cuts_a_descriptor_chip_its_own_way() -> None:
    """Outside the face library, chips come from FaceStack.identity_chip only: a service
    that imported the raw alignment (or refined landmarks itself) could drift again."""
    services = ROOT.parents[1] / "services"
    offenders = [
        str(path.relative_to(services))
        for path in services.rglob("*.py")
        if path.parts[-2] != "faces"
        and any(s in path.read_text() for s in ("identity_align", ".refine(", "align_chip("))
    ]
    assert offenders == []
