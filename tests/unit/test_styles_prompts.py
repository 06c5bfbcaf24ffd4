"""Style catalogue and custom-prompt screening: what a customer sees when choosing a look."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.policy.prompt_screen import Category, screen_prompt
from services.policy.styles import (
    MIN_STYLES,
    StyleCatalogue,
    StyleError,
    compose_prompt,
    load_catalogue,
)


def test_catalogue_has_enough_distinct_presets() -> None:
    cat = load_catalogue()
    assert len(cat) >= MIN_STYLES
    # Each preset is a distinct wardrobe × lighting × background combination.
    combos = {(s.wardrobe, s.lighting, s.background) for s in cat.styles}
    assert len(combos) == len(cat)
    for s in cat.styles:
        assert s.prompt and s.wardrobe and s.lighting and s.background
        assert cat.negative_for(s)
        # The catalogue's own text passes the same screen as customers' text.
        assert screen_prompt(s.prompt, max_chars=1000).ok, s.id


def test_list_styles_pages_through_everything() -> None:
    cat = load_catalogue()
    seen, token = [], ""
    while True:
        page, token = cat.page(5, token)
        seen += [s.id for s in page]
        if not token:
            break
    assert seen == cat.ids()
    assert cat.styles[0].to_pb().id == cat.ids()[0]
    with pytest.raises(StyleError):
        cat.page(5, "not-a-token")


def test_unknown_style_is_a_clear_error_and_empty_means_default_mix() -> None:
    cat = load_catalogue()
    with pytest.raises(StyleError, match="disco-glitter"):
        cat.resolve(["navy-blazer-soft-studio-grey", "disco-glitter"])
    assert [s.id for s in cat.resolve([])] == cat.ids()


def test_prompt_is_instance_plus_style_plus_custom() -> None:
    s = load_catalogue().get("navy-blazer-soft-studio-grey")
    p = compose_prompt("photo of hsk person", s, "  slight   smile ")
    assert p.startswith("photo of hsk person, professional corporate headshot")
    assert p.endswith(", slight smile")


def test_broken_catalogue_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "styles.yaml"
    bad.write_text("styles:\n  - id: Bad Id\n    prompt: x\n")
    with pytest.raises(StyleError, match="invalid id"):
        StyleCatalogue.load(bad)


@pytest.mark.parametrize(
    "text",
    ["smiling, wearing glasses", "hiking jacket, short beard", "holding an apple", "Navy Blazer"],
)
def test_ordinary_prompts_pass(text: str) -> None:
    res = screen_prompt(text)
    assert res.ok and res.reason == "" and res.text == text


@pytest.mark.parametrize(
    ("text", "category", "word"),
    [
        ("wearing a Nike hoodie", Category.BRAND, "nike"),
        ("Louis Vuitton scarf", Category.BRAND, "louis vuitton"),
        ("n1ke cap", Category.BRAND, "nike"),
        ("N.I.K.E. shirt", Category.BRAND, "nike"),
        ("McDonald's uniform", Category.BRAND, "mcdonalds"),
        ("looking like Taylor Swift", Category.PERSON, "taylor swift"),
        ("hair like Beyoncé", Category.PERSON, "beyonce"),
        ("in the style of Jane Roewright", Category.PERSON, "Jane Roewright"),
        ("nude portrait", Category.UNSAFE, "nude"),
        ("holding a gun", Category.UNSAFE, "gun"),
        ("as a teenager", Category.MINOR, "teenager"),
    ],
)
def test_refused_prompts_name_the_reason(text: str, category: Category, word: str) -> None:
    res = screen_prompt(text)
    assert not res.ok
    assert res.category == category
    assert res.matched == word
    assert word in res.reason and res.reason.startswith("custom prompt ")
    assert res.text == ""


def test_length_and_syntax_limits() -> None:
    res = screen_prompt("a" * 201, max_chars=200)
    assert not res.ok and res.category == Category.TOO_LONG and "limit is 200" in res.reason
    assert not screen_prompt("see https://example.com").ok
    assert not screen_prompt("smile <lora:other:1>").ok
    assert screen_prompt("").ok and screen_prompt(None).text == ""
