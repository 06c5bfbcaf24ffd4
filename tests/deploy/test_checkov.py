"""checkov's Kubernetes hardening checks on each rendered overlay.

No check may fail outside the overlay's short skip list (deploy/k8s/overlays/<o>/.checkov.yaml),
every skip carries its reason, and every skip is still needed: run without it, that check fails.
checkov runs from its own venv (.venv-checkov, `make deploy-tools`), offline.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import K8S, OVERLAYS

MAX_SKIPS = 4


def checkov(tools: Path, rendered: Path, *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        [str(tools / "checkov"), "-f", str(rendered), "--output", "json", "--quiet", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # 0: nothing failed; 1: some check failed. Anything else is checkov itself failing.
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads(proc.stdout) if proc.stdout.strip() else {}
    if isinstance(report, list):
        (report,) = [r for r in report if r.get("check_type") == "kubernetes"]
    return report


def failed(report: dict[str, Any]) -> list[str]:
    if not report:
        return []
    return [
        f"{r['check_id']} {r['check_name']} — {r['resource']}"
        for r in report["results"]["failed_checks"]
    ]


def config_path(overlay: str) -> Path:
    return K8S / "overlays" / overlay / ".checkov.yaml"


def skips(overlay: str) -> list[str]:
    return list(yaml.safe_load(config_path(overlay).read_text()).get("skip-check", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_check_fails_outside_the_skip_list(
    overlay: str, deploy_tools: Path, rendered_dir: Path
) -> None:
    report = checkov(
        deploy_tools, rendered_dir / f"{overlay}.yaml", "--config-file", str(config_path(overlay))
    )
    assert report, "checkov scanned nothing"
    assert report["summary"]["passed"] > 300
    assert failed(report) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_skip_list_is_short_and_every_skip_says_why(overlay: str) -> None:
    ids = skips(overlay)
    assert len(ids) <= MAX_SKIPS
    text = config_path(overlay).read_text()
    for check in ids:
        # A comment naming the check and giving a reason, just above its entry.
        assert re.search(
            rf"#\s*{check}\s+\"[^\"]+\":\s*\S.*\n([ \t]*#.*\n)*\s*-\s*{check}\b", text
        ), f"{check} is skipped without a reason"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_skip_is_still_needed(overlay: str, deploy_tools: Path, rendered_dir: Path) -> None:
    report = checkov(
        deploy_tools,
        rendered_dir / f"{overlay}.yaml",
        "--framework",
        "kubernetes",
        "--skip-download",
        "--check",
        ",".join(skips(overlay)),
    )
    failing = {line.split()[0] for line in failed(report)}
    stale = set(skips(overlay)) - failing
    assert not stale, f"skips no longer needed, remove them: {sorted(stale)}"
