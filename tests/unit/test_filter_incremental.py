"""AnalyzeSelfies over stored facts: each photo is analysed once, and the set's verdict over
the facts of earlier photos is the verdict over their images (real ONNX models, fixture
photos: six of one man, among them one portrait stored twice, and two of another man)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from headshots.v1 import internal_pb2
from services.faces.duplicates import detail_image
from services.faces.identity import IdentityModel
from services.filter.analysis import (
    FACTS_VERSION,
    SIGNATURE_BYTES,
    FactsError,
    SelfieAnalyzer,
    chip_of_signature,
    signature_of,
)
from tests.conftest import FIXTURES
from tests.support.face_stack import built_models, face_stack, photos

NAMES = photos("obama") + photos("biden")[:2]


@lru_cache(maxsize=1)
def analyzer() -> SelfieAnalyzer:
    return SelfieAnalyzer(face_stack(), IdentityModel.load(built_models(), intra_op_threads=2))


def image(name: str) -> internal_pb2.SelfieInput:
    return internal_pb2.SelfieInput(photo_id=name, image=(FIXTURES / name).read_bytes())


def as_facts(name: str, facts: internal_pb2.SelfieFacts) -> internal_pb2.SelfieInput:
    return internal_pb2.SelfieInput(photo_id=name, facts=facts)


def verdicts(response: internal_pb2.AnalyzeSelfiesResponse) -> list[tuple]:
    return [
        (
            p.photo_id,
            p.usable,
            [(f.code, f.message, f.blocking) for f in p.findings],
            p.duplicate_of,
            round(p.identity_distance, 5),
        )
        for p in response.photos
    ]


def set_verdict(response: internal_pb2.AnalyzeSelfiesResponse) -> tuple:
    s = response.set
    return (
        list(s.different_person),
        s.usable_count,
        round(s.identity_consistency, 5),
        round(s.variety_score, 5),
        [(f.code, f.blocking) for f in s.findings],
        np.round(np.asarray(s.reference_embedding), 5).tolist(),
    )


@pytest.fixture(scope="module")
def whole() -> internal_pb2.AnalyzeSelfiesResponse:
    """All eight images in one call, as uploads were judged before facts existed."""
    return analyzer().analyze_inputs([image(n) for n in NAMES])


@pytest.fixture(scope="module")
def one_by_one() -> tuple[list[internal_pb2.AnalyzeSelfiesResponse], int]:
    """The same photos added one per call: earlier photos as facts, the new one as image.
    Returns each call's response and how many images the face detector saw in all."""
    a = analyzer()
    seen: list[int] = []
    detect = a.stack.detect

    def counting_detect(images):  # the real detector, counted
        seen.append(len(images))
        return detect(images)

    a.stack.detect = counting_detect  # type: ignore[method-assign]
    try:
        kept: list[tuple[str, internal_pb2.SelfieFacts]] = []
        responses = []
        for name in NAMES:
            inputs = [as_facts(n, f) for n, f in kept] + [image(name)]
            response = a.analyze_inputs(inputs)
            responses.append(response)
            kept.append((name, response.photos[-1].facts))
    finally:
        del a.stack.detect
    return responses, sum(seen)


def test_each_photo_is_analysed_once(one_by_one) -> None:
    responses, images_seen = one_by_one
    assert images_seen == len(NAMES)
    for response in responses:
        *earlier, new = response.photos
        assert new.facts.version == FACTS_VERSION and len(new.facts.embedding) == 128
        assert len(new.facts.signature) == SIGNATURE_BYTES
        assert all(not p.HasField("facts") for p in earlier)  # sent as facts: nothing new


def test_the_verdict_over_facts_is_the_verdict_over_images(whole, one_by_one) -> None:
    responses, _ = one_by_one
    last = responses[-1]
    assert verdicts(last) == verdicts(whole)
    assert set_verdict(last) == set_verdict(whole)
    # and the verdict is the one the fixtures call for: a copy and two strangers
    by_id = {p.photo_id: p for p in last.photos}
    assert by_id["obama/obama-senate-bioguide.jpg"].duplicate_of == (
        "obama/obama-president-bioguide.jpg"
    )
    assert set(last.set.different_person) == {n for n in NAMES if n.startswith("biden/")}


def test_a_set_of_facts_alone_needs_no_pixels(whole, one_by_one) -> None:
    responses, _ = one_by_one
    facts = [as_facts(n, r.photos[-1].facts) for n, r in zip(NAMES, responses, strict=True)]
    a = analyzer()
    detect = a.stack.detect
    a.stack.detect = None  # type: ignore[assignment,method-assign]
    try:
        judged = a.analyze_inputs(facts)
    finally:
        a.stack.detect = detect  # type: ignore[method-assign]
        del a.stack.detect
    assert verdicts(judged) == verdicts(whole)
    assert set_verdict(judged) == set_verdict(whole)


def test_the_signature_keeps_what_tells_a_copy(one_by_one) -> None:
    """The signature's detail image is the chip's own, to the pixel."""
    a = analyzer()
    (p,) = a.analyze_photos([("x", (FIXTURES / NAMES[0]).read_bytes())])
    assert p.facts is not None and p.chip is not None
    rng = np.random.default_rng(0)
    for chip in (chip_of_signature(p.facts.signature), rng.integers(0, 256, (150, 150, 3))):
        chip = chip.astype(np.uint8)
        again = chip_of_signature(signature_of(chip))
        assert np.array_equal(detail_image(again), detail_image(chip))


def test_facts_of_another_version_or_shape_are_refused(one_by_one) -> None:
    responses, _ = one_by_one
    good = responses[0].photos[0].facts
    stale = internal_pb2.SelfieFacts()
    stale.CopyFrom(good)
    stale.version = FACTS_VERSION + 1
    with pytest.raises(FactsError) as err:
        analyzer().analyze_inputs([as_facts("a", good), as_facts("b", stale)])
    assert err.value.stale and err.value.photo_id == "b"
    cut = internal_pb2.SelfieFacts()
    cut.CopyFrom(good)
    cut.signature = good.signature[:100]
    with pytest.raises(FactsError) as err:
        analyzer().analyze_inputs([as_facts("c", cut)])
    assert not err.value.stale
