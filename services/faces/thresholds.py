"""Read one section of thresholds.yaml into a frozen dataclass of numbers.

Every field has a default (the dataclass is usable without the file); the file overrides
them, each value cast to its field's type. A key the dataclass does not know is a typo
that would silently leave the default in force, so it is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml

THRESHOLDS_FILE = Path(__file__).with_name("thresholds.yaml")

T = TypeVar("T")


def load_section(cls: type[T], section: str, path: Path | None = None) -> T:
    data = yaml.safe_load((path or THRESHOLDS_FILE).read_text()) or {}
    values: dict[str, Any] = data.get(section) or {}
    fields = getattr(cls, "__dataclass_fields__", {})
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown {section} settings in thresholds.yaml: {sorted(unknown)}")
    defaults = cls()
    return cls(**{k: type(getattr(defaults, k))(v) for k, v in values.items()})
