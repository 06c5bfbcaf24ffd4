"""The retention schedule, loaded from retention.yaml (the one documented file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

import yaml

POLICY_FILE = Path(__file__).with_name("retention.yaml")
END_STATES = {"READY", "FAILED", "CANCELLED", "EXPIRED"}


@dataclass(frozen=True)
class Policy:
    data_class: str
    description: str
    starts_at: str
    default_days: int | None = None
    min_days: int | None = None
    max_days: int | None = None
    kept_max_days: int | None = None
    follows: str | None = None
    blob_kinds: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class DayBounds:
    default: int
    low: int
    high: int


@dataclass(frozen=True)
class Schedule:
    policies: dict[str, Policy]
    erasure_description: str

    def photo_days_bounds(self) -> DayBounds:
        """Default, shortest and longest photo retention an order may choose."""
        p = self.policies["PHOTOS"]
        assert p.default_days is not None and p.min_days is not None and p.max_days is not None
        return DayBounds(p.default_days, p.min_days, p.max_days)

    def photo_days(self, requested: int) -> int:
        """Days to keep photos: the order's choice, clamped to what the policy allows."""
        keep = self.photo_days_bounds()
        if requested <= 0:
            return keep.default
        return max(keep.low, min(keep.high, requested))

    def due_times(
        self, ended_at: datetime, photo_retention_days: int, keep_model: bool
    ) -> dict[str, datetime]:
        """When each data class of an order that ended at `ended_at` is due for deletion."""
        photos = ended_at + timedelta(days=self.photo_days(photo_retention_days))
        adapter = self.policies["ADAPTER"]
        adapter_days = adapter.kept_max_days if keep_model else adapter.default_days
        results_days = self.policies["RESULTS"].default_days or 0
        return {
            "PHOTOS": photos,
            "EMBEDDINGS": photos,
            "ADAPTER": ended_at + timedelta(days=adapter_days or 0),
            "RESULTS": ended_at + timedelta(days=results_days),
        }


@cache
def load(path: Path = POLICY_FILE) -> Schedule:
    doc = yaml.safe_load(path.read_text())
    policies = {}
    for raw in doc["policies"]:
        raw = dict(raw)
        raw["description"] = " ".join(str(raw["description"]).split())
        raw["blob_kinds"] = tuple(raw.get("blob_kinds") or ())
        policies[raw["data_class"]] = Policy(**raw)
    return Schedule(policies, " ".join(doc["erasure"]["description"].split()))
