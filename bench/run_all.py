"""`make bench`: run every benchmark, print one summary table, keep the JSON.

Each `bench/bench_*.py` prints its own table and writes `bench/results/<name>.json`; this
runner runs them one after another (never in parallel: they would time each other) and
then prints the headline numbers of all of them in one table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
# The end-to-end order runs last: it is the one a reader compares against the parts.
ORDER = [
    "bench_face_stack",
    "bench_identity",
    "bench_trainer",
    "bench_generator",
    "bench_hostile",
    "bench_e2e",
]
ORDER += ["bench_outage"]  # an order under a 10 s PostgreSQL outage, after the undisturbed one


def scripts(only: list[str] | None) -> list[Path]:
    found = {p.stem: p for p in BENCH.glob("bench_*.py")}
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    if only:
        names = [n for n in names if any(o in n for o in only)]
    return [found[n] for n in names]


def flatten(doc: object, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.update(
                flatten(
                    v, f"{prefix}{k}." if not isinstance(v, (int, float, str)) else f"{prefix}{k}"
                )
            )
    elif isinstance(doc, (int, float, str)) and prefix:
        out[prefix.rstrip(".")] = doc
    return out


def headline(doc: dict[str, object]) -> dict[str, object]:
    """A benchmark's JSON may name its headline numbers under `summary`; else all scalars."""
    summary = doc.get("summary")
    return flatten(summary if isinstance(summary, dict) else doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="substrings of benchmark names to run")
    ns = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    failures = []
    for script in scripts(ns.only):
        print(f"\n=== {script.stem}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=ROOT, env=env)
        print(f"--- {script.stem}: exit {rc} in {time.perf_counter() - t0:.1f}s", flush=True)
        if rc != 0:
            failures.append(script.stem)
    rows = []
    for path in sorted(p for p in RESULTS.glob("*.json") if p.name != "summary.json"):
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            for key, value in headline(doc).items():
                if isinstance(value, float):
                    value = f"{value:.4g}"
                rows.append((path.stem, key, str(value)))
    width = max((len(f"{a} {b}") for a, b, _ in rows), default=20)
    print("\n" + "=" * (width + 20))
    print(f"{'benchmark / metric':<{width}}  value")
    print("-" * (width + 20))
    for name, key, value in rows:
        print(f"{name + ' ' + key:<{width}}  {value}")
    (RESULTS / "summary.json").write_text(
        json.dumps({"rows": [{"bench": a, "metric": b, "value": c} for a, b, c in rows]}, indent=2)
    )
    if failures:
        print(f"\nfailed: {', '.join(failures)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
