"""The platform's shared rules: one home, one default, read the same by every service."""

from __future__ import annotations

import pytest

from services.policy.limits import Limits, candidate_budget, limits, next_round_size
from services.policy.prompt_screen import screen_prompt
from services.policy.retention import load as load_retention


def test_round_sizing_closes_the_gap_within_budget_and_rounds() -> None:
    lim = limits()
    # 30 of 60 passed, 100 wanted: at a 50 % rate 140 more, plus the margin.
    more = next_round_size(30, 100, rounds_done=1, budget=1000, generated=60)
    assert more == pytest.approx(70 / 0.5 * lim.round_margin, abs=1)
    assert next_round_size(30, 100, rounds_done=1, budget=50, generated=60) == 50
    assert next_round_size(30, 100, rounds_done=lim.max_rounds, budget=1000, generated=60) == 0
    assert next_round_size(100, 100, rounds_done=1, budget=1000, generated=200) == 0
    # one missing image still costs a worthwhile round
    assert next_round_size(99, 100, rounds_done=1, budget=1000, generated=200) == lim.min_round
    # a round where nothing passed asks for a real round, not for infinity
    assert lim.min_round <= next_round_size(0, 10, rounds_done=1, budget=10_000, generated=40)
    assert next_round_size(0, 10, rounds_done=1, budget=10_000, generated=40) <= 10_000
    with pytest.raises(ValueError, match=">= 0"):
        next_round_size(-1, 10, rounds_done=1, budget=100, generated=0)


def test_candidate_budget_is_a_factor_of_the_order_capped_per_order() -> None:
    lim = limits()
    assert candidate_budget(100) == int(100 * lim.max_candidates_factor)
    assert candidate_budget(100_000) == lim.max_images_per_order


def test_one_environment_variable_changes_a_limit_for_every_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HS_LIMIT_MAX_ROUNDS", "2")
    assert Limits().max_rounds == 2
    monkeypatch.setenv("HS_LIMIT_MIN_PHOTOS", "3")
    assert Limits().min_photos == 3


def test_photo_retention_bounds_come_from_the_published_schedule() -> None:
    keep = load_retention().photo_days_bounds()
    assert (keep.default, keep.low, keep.high) == (7, 1, 30)
    assert load_retention().photo_days(0) == 7
    assert load_retention().photo_days(90) == 30


@pytest.mark.parametrize("text", ["n1ke hoodie", "looking like Taylor Swift", "Gucci jacket"])
def test_the_prompt_screen_refuses_brands_people_and_look_alike_spellings(text: str) -> None:
    assert not screen_prompt(text, limits().max_custom_prompt_chars).ok
