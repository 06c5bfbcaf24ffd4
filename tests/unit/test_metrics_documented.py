"""Every metric a service exports is in the README's metrics table, the page operators
build dashboards and alerts from: a metric added without a row fails here."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY

import services.common.metrics  # noqa: F401  (registers the metrics)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_exported_metric_has_a_readme_row() -> None:
    exported = {family.name for family in REGISTRY.collect() if family.name.startswith("hs_")}
    assert len(exported) >= 15
    documented = set(re.findall(r"`(hs_[a-z_]+)`", README.read_text()))
    # prometheus_client names a counter without its `_total`.
    missing = {n for n in exported if n not in documented and f"{n}_total" not in documented}
    assert not missing, f"metrics without a README row: {sorted(missing)}"
