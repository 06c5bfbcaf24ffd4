"""The held-apart identity bench's own measures (bench/identity_heldapart.py): the skin-tone
proxy it groups darker-skinned faces by, and its false-accept count. The bench itself needs
a clone of voteview/member_photos and is run by hand."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from bench import identity_eval as ev
from bench import identity_heldapart as ha
from services.filter.analysis import SelfieAnalyzer
from tests.support.face_stack import built_models

pytestmark = pytest.mark.timeout(600)


@lru_cache(maxsize=1)
def analyzer() -> SelfieAnalyzer:
    return SelfieAnalyzer.load(built_models(), intra_op_threads=2, prefer_gpu=False)


def test_lab_conversion_matches_the_published_values() -> None:
    lab = ha.srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [128, 128, 128]]))
    # sRGB white, black, red and mid grey in CIELAB (D65): the standard reference values.
    expected = [[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20], [53.59, 0.0, 0.0]]
    np.testing.assert_allclose(lab, expected, atol=0.35)


def test_skin_tone_orders_light_and_dark_skin_and_flags_grey_photos() -> None:
    def chip(rgb: tuple[int, int, int]) -> np.ndarray:
        return np.broadcast_to(np.array(rgb, np.uint8), (150, 150, 3)).copy()

    light_ita, light_chroma = ha.skin_tone(chip((236, 200, 180)))
    dark_ita, dark_chroma = ha.skin_tone(chip((92, 60, 45)))
    _, grey_chroma = ha.skin_tone(chip((120, 120, 120)))
    # Chardon's classes: > 41 degrees "light" or lighter, < -30 "dark".
    assert light_ita > 41 and dark_ita < -30
    assert light_chroma >= ha.MIN_SKIN_CHROMA and dark_chroma >= ha.MIN_SKIN_CHROMA
    assert grey_chroma < 1.0  # a grey photo is left out, whatever its angle


def test_the_proxy_agrees_with_self_reported_populations_on_real_photos() -> None:
    """Nearly every London-set photo of a person who reported being Black measures darker
    (one person's two photos measure -4 and -7 degrees: lighter skin), and none of a person
    who reported being White or East Asian does."""
    darker: dict[str, list[bool]] = {}
    for it in ev.load_items(synthetic=()):
        if it.population not in ("black", "white", "east_asian"):
            continue
        ita, chroma = ha.skin_tone(ha.colour_chip(analyzer(), it.data()))
        darker.setdefault(it.population, []).append(
            chroma >= ha.MIN_SKIN_CHROMA and ita < ha.DARKER_ITA
        )
    assert len(darker["black"]) >= 20 and np.mean(darker["black"]) >= 0.9
    assert not any(darker["white"]) and not any(darker["east_asian"])


def test_false_accepts_count_pairs_of_different_names_within_each_limit() -> None:
    def face(name: str, x: float) -> ha.Described:
        e = np.zeros(128, np.float32)
        e[0] = x
        return ha.Described(ha.Member(name, name, 118, ""), e, 0.0, 20.0)

    # A and A again (one member under two ids) are one person; B is 0.49 from A, C 0.45
    # from B.
    faces = [face("A", 0.0), face("A", 0.005), face("B", 0.49), face("C", 0.94)]
    r = ha.false_accepts(faces, 0.50)
    assert r["impostor_pairs"] == 5  # the A-A pair is not an impostor pair
    far = r["far"]
    assert isinstance(far, dict)
    assert far["0.50"] == pytest.approx(3 / 5)  # A-B, A'-B (0.485) and B-C
    assert far["0.48"] == pytest.approx(1 / 5)  # only B-C
    assert far["0.44"] == 0.0
