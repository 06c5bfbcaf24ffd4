"""Images scored and analysed side by side give exactly what one at a time gives, in the
batch's order (real face stack, real photos)."""

from __future__ import annotations

import numpy as np
import pytest

from services.faces.parallel import ImagePool
from services.filter.analysis import SelfieAnalyzer
from services.filter.scoring import CandidateScorer
from tests.support.face_stack import photos
from tests.unit.test_filter_analysis import analyzer, png, raw, render_512


def test_parts_come_back_in_the_batch_order() -> None:
    pool = ImagePool(3)
    assert pool.map_batch(lambda part: [x * 10 for x in part], list(range(8))) == [
        x * 10 for x in range(8)
    ]
    assert pool.map_batch(lambda part: list(part), [7]) == [7]
    with pytest.raises(RuntimeError, match="one result per item"):
        pool.map_batch(lambda part: [], [1, 2, 3])
    with pytest.raises(ValueError):
        ImagePool(0)


def test_two_images_at_a_time_give_the_same_verdicts() -> None:
    one = analyzer()
    two = SelfieAnalyzer(one.stack, one.identity, pool=ImagePool(2))
    names = photos("obama") + photos("biden")[:2]
    items = [(n, raw(n)) for n in names] + [("broken", b"\xff\xd8 not a jpeg")]
    a, b = one.analyze(items), two.analyze(items)
    assert [p.photo_id for p in b.photos] == [p.photo_id for p in a.photos]
    assert b == a  # every finding, number and descriptor, and the set's verdict

    ref = np.asarray(a.set.reference_embedding, np.float32)
    renders = [png(render_512(n)) for n in names[:5]] + [b"\x89PNG broken"]
    seq = CandidateScorer(one.stack, one.identity).score(renders, ref)
    par = CandidateScorer(one.stack, one.identity, pool=ImagePool(2)).score(renders, ref)
    assert [v.reasons for v in par] == [v.reasons for v in seq]
    for s, p in zip(seq, par, strict=True):
        assert p.scores == pytest.approx(s.scores, abs=1e-6)
