"""GPU smoke of the services' own device code paths (not stand-in benchmark loops).

    python -m bench.gpu.smoke [--device cuda] [--steps 60]

1. Trainer: face-aligned crops of the Obama fixtures (face stack on onnxruntime), then
   `train_lora` on the tiny SD1.5 and SDXL models with the service's device defaults
   (bf16 autocast on a GPU that has it, checkpointing by memory size), validations
   and checkpoint choice included; the adapter must come out and be non-empty.
2. Generator: `WarmPipeline` on the same device, the trained adapter activated, one batch
   of 8 rendered twice with the same seeds (must be identical), a swap to a second adapter
   and back (images bit-identical to the first time).

Runs on CPU too (`--device cpu`), which is how CI-less machines check the script itself.
Prints one line per check and writes bench/results/gpu_smoke.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
FACES = Path(os.environ.get("HS_FIXTURES", ROOT / "tests" / "fixtures" / "faces"))
MODELS = Path(os.environ.get("HS_MODELS_DIR", ROOT / "var" / "models"))
RESULTS = ROOT / "bench" / "results"


def crops(size: int) -> list[Any]:
    from services.trainer.preprocess import CropGeometry, Preprocessor

    pre = Preprocessor.load(MODELS / "face", CropGeometry(size))
    photos = sorted((FACES / "obama").glob("*.jpg"))
    result = pre.run([(p.name, p.read_bytes()) for p in photos])
    return result.crops


def train(kind: str, device: str, steps: int) -> dict[str, Any]:
    from services.trainer.lora_training import TrainConfig, train_lora

    base = MODELS / f"tiny-{kind}"
    config = TrainConfig(
        class_word="man",
        steps=steps,
        batch_size=4,
        learning_rate=1e-3,
        validation_every=steps // 2,
        validation_images=2,
        validation_inference_steps=4,
        device=device,
    )
    size = 64
    t0 = time.perf_counter()
    outcome = train_lora(base, crops(size), config)
    row = {
        "check": f"train {kind}",
        "ok": len(outcome.adapter) > 1000 and outcome.steps == steps,
        "adapter_bytes": len(outcome.adapter),
        "s_per_step": round(outcome.seconds_per_step, 4),
        "chosen_step": outcome.chosen_step,
        "metric": outcome.metric,
        "final_loss": round(outcome.final_loss, 4),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    row["_adapter"] = outcome.adapter
    return row


def generate(device: str, adapter: bytes) -> dict[str, Any]:
    from services.generator.pipeline import WarmPipeline, parse_adapter
    from services.generator.settings import GeneratorSettings

    settings = GeneratorSettings(
        base_model=MODELS / "tiny-sd15", device=device, steps=8, batch_size=8
    )
    warm = WarmPipeline.load(settings)
    a = parse_adapter(adapter)
    # A second adapter of the same shape: the first with its up-projections negated.
    b = {k: (-v if "lora.up" in k or "lora_B" in k else v) for k, v in a.items()}
    prompts = ["photo of ohwx man, navy blazer, soft studio light"] * 8
    negs = ["blurry"] * 8
    seeds = list(range(100, 108))
    warm.activate("a", a)
    t0 = time.perf_counter()
    first = warm.render(prompts, negs, seeds)
    if device == "cuda":
        torch.cuda.synchronize()
    batch_s = time.perf_counter() - t0
    again = warm.render(prompts, negs, seeds)
    warm.activate("b", b)
    other = warm.render(prompts, negs, seeds)
    warm.activate("a", a)
    back = warm.render(prompts, negs, seeds)
    same = all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    differs = any(not np.array_equal(x, y) for x, y in zip(first, other, strict=True))
    restored = all(np.array_equal(x, y) for x, y in zip(first, back, strict=True))
    return {
        "check": "generate sd15 batch 8",
        "ok": same and differs and restored,
        "rerender_identical": same,
        "other_adapter_differs": differs,
        "swap_back_identical": restored,
        "batch_s": round(batch_s, 3),
        "dtype": str(warm.pipe.unet.dtype),
        "device": str(warm.pipe.unet.device),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=60)
    ns = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows: list[dict[str, Any]] = []
    adapter: bytes | None = None
    for kind in ("sd15", "sdxl"):
        try:
            row = train(kind, ns.device, ns.steps)
            if kind == "sd15":
                adapter = row["_adapter"]
            row.pop("_adapter")
        except Exception as err:
            traceback.print_exc()
            row = {"check": f"train {kind}", "ok": False, "error": repr(err)[:500]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if adapter is not None:
        try:
            row = generate(ns.device, adapter)
        except Exception as err:
            traceback.print_exc()
            row = {"check": "generate sd15 batch 8", "ok": False, "error": repr(err)[:500]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    doc = {
        "device": torch.cuda.get_device_name() if ns.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gpu_smoke.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
