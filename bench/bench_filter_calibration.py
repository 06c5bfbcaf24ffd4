"""Candidate filter on its calibration set: what each reason catches, and scoring speed.

    python -m bench.bench_filter_calibration [--threads 2] [--batch 8] [--repeats 3]

1. Every image of tests/fixtures/filter-calibration (MANIFEST.csv: good portraits, closed
   eyes, winks, gaze/iris defects, malformed hands, partial faces) goes through the
   candidate scorer; the table shows, per label, how many were caught (for `good`: passed
   clean) and which reasons fired. Real and generated images are counted apart from
   synthetic edits.
   What the hand rule costs: malformed hands caught and good portraits lost by the rule
   in use and by its strict product form (any visible hand rejects).
2. Candidate scoring speed: batches of `--batch` 512x512 PNG renders (good portraits of
   the set, resized), the whole scorer (decode, detect, mesh and irises, eye measures,
   palms and hand landmarks, descriptor), on `--threads` onnxruntime threads. Median of
   `--repeats`.

Writes bench/results/filter_calibration.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import onnxruntime as ort

from bench.bench_face_stack import png_bytes
from models.face_stack.build import build
from services.faces.face_stack import FaceStack
from services.faces.geometry import resize
from services.faces.identity import IdentityModel
from services.faces.image_io import decode_image
from tests.support.filter_calibration import (
    FACES,
    format_table,
    hand_rule_costs,
    manifest,
    rates,
    run,
    scorer,
)

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("HS_MODELS_DIR", ROOT / "var" / "models")) / "face"
RESULTS = ROOT / "bench" / "results"
SIZE = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    build(MODELS, fixtures=FACES)
    stack = FaceStack.load(MODELS, intra_op_threads=args.threads, prefer_gpu=False)
    identity = IdentityModel.load(MODELS, intra_op_threads=args.threads, prefer_gpu=False)
    sc = scorer(stack, identity)

    items = manifest()
    t0 = time.perf_counter()
    outcomes = run(sc, items, batch=args.batch)
    calib_s = time.perf_counter() - t0
    table = format_table(outcomes)
    print(f"\nfilter calibration set: {len(items)} images, {calib_s:.0f} s")
    print(table)
    costs = hand_rule_costs(stack, items)
    print("\nhand rule: malformed hands caught / good portraits lost (to BROKEN_HAND alone)")
    for c in costs:
        print(
            f"  {c.rule:<44} caught {c.malformed_caught}/{c.malformed} "
            f"(real {c.real_caught}/{c.real})  good lost {c.good_lost}/{c.good} "
            f"({c.good_lost / max(c.good, 1):.1%})"
        )

    good = [it for it in items if it.label == "good" and it.kind == "generated"]
    renders = [
        png_bytes(resize(decode_image(it.path.read_bytes()), SIZE, SIZE))
        for it in good[: args.batch * 2]
    ]
    batches = [renders[i : i + args.batch] for i in range(0, len(renders), args.batch)]
    sc.score(batches[0], None)  # warm-up
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        for b in batches:
            sc.score(b, None)
        times.append(time.perf_counter() - t)
    per_s = len(renders) / statistics.median(times)
    print(
        f"\ncandidate scoring at {SIZE}x{SIZE}, batches of {args.batch}, "
        f"{args.threads} threads: {per_s:.1f} images/s"
    )

    r = rates(outcomes)
    doc = {
        "images": len(items),
        "threads": args.threads,
        "batch": args.batch,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "onnxruntime": ort.__version__,
        "rates": {
            k: {
                "n": v.n,
                "caught": v.caught,
                "rate": round(v.rate, 3),
                "real_n": v.real,
                "real_caught": v.real_caught,
            }
            for k, v in r.items()
        },
        "missed": [
            {"file": o.item.file, "label": o.item.label, "reasons": list(o.reasons)}
            for o in outcomes
            if not o.caught
        ],
        "hand_rule_costs": [
            {
                "rule": c.rule,
                "malformed_caught": c.malformed_caught,
                "malformed": c.malformed,
                "real_caught": c.real_caught,
                "real": c.real,
                "good_lost": c.good_lost,
                "good": c.good,
            }
            for c in costs
        ],
        "summary": {
            "closed_eyes_recall": round(r["eyes_closed"].rate, 3),
            "wink_recall": round(r["wink"].rate, 3),
            "gaze_iris_recall": round(r["gaze_iris"].rate, 3),
            "malformed_hand_recall": round(r["hand_malformed"].rate, 3),
            "good_false_reject": round(1 - r["good"].rate, 3),
            f"score_images_per_s_{SIZE}_batch{args.batch}_threads{args.threads}": round(per_s, 1),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "filter_calibration.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"-> {RESULTS / 'filter_calibration.json'}")


if __name__ == "__main__":
    main()
