"""Speed of this tree against an earlier revision, measured side by side.

    python -m bench.compare_revisions REV [--bench bench_face_stack] [--rounds 3]

A figure measured on another day, or another machine, says little about a change: the CPU
model, its neighbours and its clock differ. This checks REV out into a temporary worktree
(sharing this tree's built models, `var/`), then runs the same benchmark module of both
trees alternately, `rounds` times each, so both see the same minutes of the same machine.
It reports each tree's median per stage and the ratio (this tree's speed ÷ REV's; > 1 is
faster) and writes bench/results/compare_<bench>.json. The benchmark must write
bench/results/<name>.json with an `ms_per_image` mapping (bench_face_stack does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUTPUTS = {"bench_face_stack": "face_stack.json"}


def run_once(tree: Path, bench: str, extra: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HS_MODELS_DIR": str(ROOT / "var" / "models")}
    subprocess.run(
        [sys.executable, "-m", f"bench.{bench}", *extra],
        cwd=tree,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    doc = json.loads((tree / "bench" / "results" / OUTPUTS[bench]).read_text())
    return {k: float(v) for k, v in doc["ms_per_image"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the earlier revision (a commit, tag or branch)")
    parser.add_argument("--bench", default="bench_face_stack", choices=sorted(OUTPUTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="passed to the benchmark")
    parser.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="THIS=REV",
        help="also compare this tree's stage THIS with REV's stage REV (a path renamed)",
    )
    ns = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ns.rev], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    commit = commit.strip()
    extra = ["--repeats", str(ns.repeats)]
    with tempfile.TemporaryDirectory(prefix="hs-compare-") as tmp:
        other = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(other), commit],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            (other / "var").symlink_to(ROOT / "var")
            # Revisions from before the face fixtures moved into the repository read them
            # from ../shared/fixtures: give them this tree's.
            (Path(tmp) / "shared").mkdir()
            (Path(tmp) / "shared" / "fixtures").symlink_to(ROOT / "tests" / "fixtures")
            runs: dict[str, list[dict[str, float]]] = {"this": [], commit: []}
            for _ in range(ns.rounds):  # alternate, so both trees share the machine's moods
                runs[commit].append(run_once(other, ns.bench, extra))
                runs["this"].append(run_once(ROOT, ns.bench, extra))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=False
            )
    pairs = [(s, s) for s in runs["this"][0] if s in runs[commit][0]]
    pairs += [tuple(p.split("=", 1)) for p in ns.pair]  # type: ignore[misc]
    table = {}
    print(f"\n{ns.bench}: this tree vs {commit}, {ns.rounds} alternating rounds (median ms/image)")
    print(f"{'stage':<20}{commit:>12}{'this':>12}{'speed ratio':>13}")
    for stage, old_stage in pairs:
        before = statistics.median(r[old_stage] for r in runs[commit])
        after = statistics.median(r[stage] for r in runs["this"])
        name = stage if stage == old_stage else f"{stage} vs {old_stage}"
        table[name] = {"before_ms": before, "after_ms": after, "speed_ratio": before / after}
        print(f"{name:<20}{before:>12.1f}{after:>12.1f}{before / after:>12.2f}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"compare_{ns.bench}.json"
    doc = {"against": commit, "rounds": ns.rounds, "cpus": os.cpu_count(), "stages": table}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
