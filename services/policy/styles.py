"""The style catalogue: presets (wardrobe × lighting × background) as prompt fragments.

Import-light on purpose (yaml only, no torch): the gateway lists the same catalogue through
`ListStyles` and validates an order's style ids before any GPU is spent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from headshots.v1 import headshots_pb2

DEFAULT_FILE = Path(__file__).with_name("styles.yaml")
STYLE_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
MIN_STYLES = 12


class StyleError(ValueError):
    """An unknown style id or a broken catalogue file."""


@dataclass(frozen=True, slots=True)
class Style:
    id: str
    display_name: str
    wardrobe: str
    lighting: str
    background: str
    prompt: str
    negative_prompt: str

    def to_pb(self) -> headshots_pb2.Style:
        from headshots.v1 import headshots_pb2

        return headshots_pb2.Style(
            id=self.id,
            display_name=self.display_name,
            wardrobe=self.wardrobe,
            lighting=self.lighting,
            background=self.background,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
        )


def _clean(text: Any) -> str:
    return " ".join(str(text or "").split())


class StyleCatalogue:
    def __init__(self, styles: Sequence[Style], default_negative: str = "") -> None:
        self.styles: tuple[Style, ...] = tuple(styles)
        self.default_negative = _clean(default_negative)
        self._by_id = {s.id: s for s in self.styles}
        if len(self._by_id) != len(self.styles):
            raise StyleError("style ids in the catalogue are not unique")

    @classmethod
    def load(cls, path: Path | str | None = None) -> StyleCatalogue:
        path = Path(path or DEFAULT_FILE)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise StyleError(f"cannot read style catalogue {path}: {err}") from err
        if not isinstance(raw, dict) or not isinstance(raw.get("styles"), list):
            raise StyleError(f"{path}: expected a mapping with a 'styles' list")
        styles = []
        for i, item in enumerate(raw["styles"]):
            if not isinstance(item, dict):
                raise StyleError(f"{path}: style #{i} is not a mapping")
            sid = str(item.get("id", ""))
            if not STYLE_ID_RE.fullmatch(sid):
                raise StyleError(f"{path}: style #{i} has an invalid id {sid!r}")
            prompt = _clean(item.get("prompt"))
            if not prompt:
                raise StyleError(f"{path}: style {sid} has no prompt")
            styles.append(
                Style(
                    id=sid,
                    display_name=_clean(item.get("display_name")) or sid,
                    wardrobe=_clean(item.get("wardrobe")),
                    lighting=_clean(item.get("lighting")),
                    background=_clean(item.get("background")),
                    prompt=prompt,
                    negative_prompt=_clean(item.get("negative_prompt")),
                )
            )
        return cls(styles, raw.get("default_negative", ""))

    def __len__(self) -> int:
        return len(self.styles)

    def ids(self) -> list[str]:
        return [s.id for s in self.styles]

    def get(self, style_id: str) -> Style:
        try:
            return self._by_id[style_id]
        except KeyError:
            raise StyleError(f"unknown style {style_id!r}; see ListStyles") from None

    def resolve(self, style_ids: Iterable[str]) -> list[Style]:
        """The styles of an order; empty means the whole catalogue (the default mix)."""
        ids = [s for s in style_ids if s]
        unknown = [s for s in ids if s not in self._by_id]
        if unknown:
            raise StyleError(f"unknown style(s) {', '.join(map(repr, unknown))}; see ListStyles")
        if not ids:
            return list(self.styles)
        # Keep the caller's order; a repeated id weighs that style more.
        return [self._by_id[s] for s in ids]

    def negative_for(self, style: Style) -> str:
        return ", ".join(p for p in (style.negative_prompt, self.default_negative) if p)

    def page(self, page_size: int, page_token: str) -> tuple[list[Style], str]:
        """ListStyles paging: the token is the offset of the next page (opaque to clients)."""
        try:
            start = int(page_token) if page_token else 0
        except ValueError:
            raise StyleError(f"invalid page token {page_token!r}") from None
        if start < 0 or start > len(self.styles):
            raise StyleError(f"invalid page token {page_token!r}")
        size = page_size if page_size > 0 else 50
        size = min(size, 100)
        items = list(self.styles[start : start + size])
        nxt = start + size
        return items, (str(nxt) if nxt < len(self.styles) else "")


def compose_prompt(instance_prompt: str, style: Style, custom_prompt: str = "") -> str:
    """`<instance prompt>, <style fragment>[, <screened custom text>]`."""
    parts = [_clean(instance_prompt), style.prompt, _clean(custom_prompt)]
    return ", ".join(p for p in parts if p)


@lru_cache(maxsize=4)
def load_catalogue(path: str | None = None) -> StyleCatalogue:
    """The catalogue, parsed once per process per file."""
    return StyleCatalogue.load(path)


def platform_catalogue() -> StyleCatalogue:
    """The platform's one catalogue: `HS_STYLES_FILE` when set, else the bundled styles.yaml.

    The gateway lists and validates it and the generator renders it, so both read it here.
    """
    return load_catalogue(os.environ.get("HS_STYLES_FILE") or None)
