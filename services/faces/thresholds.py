"""Read one section of thresholds.yaml into a frozen dataclass of numbers.

Every field has a default (the dataclass is usable without the file); the file overrides
them, each value cast to its field's type. A key the dataclass does not know is a typo
that would silently leave the default in force, so it is refused.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

THRESHOLDS_FILE = Path(__file__).with_name("thresholds.yaml")

T = TypeVar("T")


@lru_cache(maxsize=8)
def _parsed(path: Path, mtime_ns: int) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def section(name: str, path: Path | None = None) -> dict[str, Any]:
    """One section of the file as parsed YAML (a copy). Parsed once per file version:
    candidate scoring reads the identity section for every batch."""
    p = path or THRESHOLDS_FILE
    return copy.deepcopy(_parsed(p, p.stat().st_mtime_ns).get(name) or {})


def load_section(cls: type[T], section_name: str, path: Path | None = None) -> T:
    values = section(section_name, path)
    fields = getattr(cls, "__dataclass_fields__", {})
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown {section_name} settings in thresholds.yaml: {sorted(unknown)}")
    defaults = cls()
    return cls(**{k: type(getattr(defaults, k))(v) for k, v in values.items()})
