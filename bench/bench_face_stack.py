"""Face stack speed on this machine: ms/image and images/s at 512×512.

    python -m bench.bench_face_stack [--repeats 5] [--batch 8]

Parts timed separately, each on real fixture photos resized to 512×512 (so a face is
present and every stage does its full work): CenterFace detection (letterbox + model +
decode), mesh + both irises on one face, hands (palm detector + landmark model on each palm
found), and the whole selfie check. Batched detection is timed too; so are the two service
paths: AnalyzeSelfies on the six obama photos and candidate scoring of a batch of 512² PNG
renders (decode, detect, mesh, hands, descriptor, likeness), first on `--threads` intra-op
threads one image at a time, then as the filter runs them by default (rows tagged `2x1t`:
two images side by side, one intra-op thread each). Median of `repeats`.
Writes bench/results/face_stack.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from models.face_stack.build import build
from services.faces.face_stack import FaceStack
from services.faces.geometry import resize
from services.faces.identity import IdentityModel
from services.faces.image_io import decode_image
from services.filter.analysis import SelfieAnalyzer
from services.filter.scoring import CandidateScorer
from services.filter.settings import FilterSettings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "faces"
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


def png_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return out.getvalue()


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
    identity = IdentityModel.load(MODELS, intra_op_threads=args.threads)
    analyzer = SelfieAnalyzer(stack, identity)
    scorer = CandidateScorer(stack, identity)
    selfies = [(p.name, p.read_bytes()) for p in sorted((FIXTURES / "obama").glob("*.jpg"))]
    reference = np.asarray(analyzer.analyze(selfies).set.reference_embedding, np.float32)
    renders = [png_bytes(im) for im in batch]

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
        # The service paths: AnalyzeSelfies on an upload set (decode, checks, descriptors,
        # set consensus) and jobs.filter scoring of a batch of 512² PNG renders.
        f"analyze_set{len(selfies)}": median_ms(
            lambda: analyzer.analyze(selfies), args.repeats, len(selfies)
        ),
        f"score_batch{args.batch}": median_ms(
            lambda: scorer.score(renders, reference), args.repeats, len(renders)
        ),
    }
    # The same two service paths as the filter runs them by default: images side by side
    # (HS_FILTER_IMAGE_THREADS), each model run on HS_FILTER_INTRA_OP_THREADS cores.
    settings = FilterSettings()
    served = SelfieAnalyzer.served(settings, MODELS, prefer_gpu=False)
    served_scorer = CandidateScorer(served.stack, served.identity, pool=served.pool)
    tag = f"{settings.image_threads}x{settings.intra_op_threads}t"
    rows[f"analyze_set{len(selfies)}_{tag}"] = median_ms(
        lambda: served.analyze(selfies), args.repeats, len(selfies)
    )
    rows[f"score_batch{args.batch}_{tag}"] = median_ms(
        lambda: served_scorer.score(renders, reference), args.repeats, len(renders)
    )
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
