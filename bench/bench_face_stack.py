"""Face stack speed on this machine: ms/image and images/s at 512×512.

    python -m bench.bench_face_stack [--repeats 5] [--batch 8]

Parts timed separately, each on real fixture photos resized to 512×512 (so a face is
present and every stage does its full work): CenterFace detection (letterbox + model +
decode), mesh + both irises on one face, hands (palm detector + landmark model on each palm
found), and the whole selfie check. Batched detection is timed too. Median of `repeats`.
Writes bench/results/face_stack.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort

from models.face_stack.build import build
from services.filter.face_stack import FaceStack
from services.filter.geometry import resize
from services.filter.image_io import decode_image

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "faces"
MODELS = Path(os.environ.get("HS_MODELS_DIR", ROOT / "var" / "models")) / "face"
RESULTS = ROOT / "bench" / "results"
SIZE = 512
PHOTOS = [
    "obama/obama-2012-portrait.jpg",  # has a visible hand: the hand stage runs fully
    "biden/biden-senate-bioguide.jpg",  # has a visible hand
    "obama/obama-briefing-room.jpg",
    "others/020145.jpg",
]


def median_ms(fn: Callable[[], object], repeats: int, per: int) -> float:
    fn()  # warm-up: first run allocates
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000 / per)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    build(MODELS, fixtures=FIXTURES)
    stack = FaceStack.load(MODELS, intra_op_threads=args.threads)
    images = [resize(decode_image((FIXTURES / p).read_bytes()), SIZE, SIZE) for p in PHOTOS]
    faces = [stack.detect([im])[0][0] for im in images]
    n = len(images)
    batch = (images * args.batch)[: args.batch]

    rows: dict[str, float] = {
        "detector": median_ms(lambda: [stack.detect([im]) for im in images], args.repeats, n),
        f"detector_batch{args.batch}": median_ms(
            lambda: stack.detect(batch), args.repeats, len(batch)
        ),
        "mesh_iris": median_ms(
            lambda: [stack.landmarks(im, f) for im, f in zip(images, faces, strict=True)],
            args.repeats,
            n,
        ),
        "hands": median_ms(lambda: [stack.hands(im) for im in images], args.repeats, n),
        f"hands_batch{args.batch}": median_ms(
            lambda: stack.hands_batch(batch), args.repeats, len(batch)
        ),
        "selfie_check": median_ms(
            lambda: [stack.check_selfie(im) for im in images], args.repeats, n
        ),
    }
    providers = stack.detector.session.get_providers()
    print(f"\nface stack at {SIZE}x{SIZE}, {providers[0]}, {os.cpu_count()} CPUs visible")
    print(f"{'stage':<20}{'ms/image':>10}{'images/s':>10}")
    for name, ms in rows.items():
        print(f"{name:<20}{ms:>10.1f}{1000 / ms:>10.1f}")
    doc = {
        "size": SIZE,
        "provider": providers[0],
        "onnxruntime": ort.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "repeats": args.repeats,
        "photos": PHOTOS,
        "ms_per_image": {k: round(v, 2) for k, v in rows.items()},
        "images_per_s": {k: round(1000 / v, 1) for k, v in rows.items()},
        "summary": {f"{k}_ms": round(v, 1) for k, v in rows.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "face_stack.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"-> {RESULTS / 'face_stack.json'}")


if __name__ == "__main__":
    main()
