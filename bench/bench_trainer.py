"""Trainer benchmark.

CPU (default), tiny models built by `models.tiny_diffusion` (64 px, 8x8 latents):
- seconds per training step (LoRA rank 16 on the UNet attention projections, batch 1) for
  the SD1.5-shaped and the SDXL-shaped tiny model;
- seconds per order: preprocessing of the six fixture selfies (face stack) + training with
  the default step rule (100 steps per photo) + five validations, checkpointing in memory.

`--gpu`: SD1.5-architecture and SDXL-architecture UNets from their published configs with
random weights (`UNet2DConditionModel(**config)` only: no pipeline, no download), LoRA
rank 16 on to_q/to_k/to_v/to_out.0 (fp32 LoRA weights, AdamW), frozen weights in bf16,
bf16 autocast, SDPA, gradient checkpointing off and on, at 512² and 1024², batch 1 and 4:
steps/s, peak memory, MFU = achieved FLOP/s / bf16 matmul peak measured in the same run.
Training FLOPs per sample = 3 x forward (forward + backward of activations and weights;
checkpointing's recomputation is not counted, as MFU conventionally does not). Forward FLOPs
per sample: 0.803 T for SD1.5 at 512², 6.761 T for SDXL at 1024² (project figures); other
resolutions scale by pixel count (attention grows faster, so those MFU figures are a lower
bound). Each configuration catches its own out-of-memory.

Prints a table; writes bench/results/trainer.json (CPU) or trainer_gpu.json (GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from models.full_config import SD15_UNET, SDXL_UNET

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FACES = (ROOT / "tests" / "fixtures" / "faces").resolve()
MODELS = Path(os.environ.get("HS_MODELS_DIR", ROOT / "var" / "models"))

# ---- GPU: real UNet configs (values of the published unet/config.json files) ----------------

# The published configs' values live with the builder of full-size models.
# name: (config, native resolution, forward TFLOPs per sample at native, context dim)
GPU_MODELS: dict[str, tuple[dict[str, Any], int, float, int]] = {
    "sd15": (SD15_UNET, 512, 0.803, 768),
    "sdxl": (SDXL_UNET, 1024, 6.761, 2048),
}
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def measure_bf16_peak(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """TFLOP/s of a large bf16 matmul: the MFU denominator, measured in this run."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def _lora_unet(name: str, device: torch.device) -> Any:
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    config = GPU_MODELS[name][0]
    torch.manual_seed(0)
    # Built on the device: random init of 2.6 B parameters on the host takes minutes.
    with torch.device(device):
        unet = UNet2DConditionModel(**config)
    unet.requires_grad_(False)
    unet.to(dtype=torch.bfloat16)
    unet.add_adapter(
        LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian", target_modules=TARGETS)
    )
    for p in unet.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    unet.train()
    return unet


def _gpu_step_fn(name: str, unet: Any, res: int, batch: int, device: torch.device) -> Any:
    ctx = GPU_MODELS[name][3]
    lat = res // 8
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    hidden = torch.randn(batch, 77, ctx, device=device, dtype=torch.bfloat16)
    extra: dict[str, Any] = {}
    if name == "sdxl":
        extra["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, 1280, device=device, dtype=torch.bfloat16),
            "time_ids": torch.tensor([[res, res, 0, 0, res, res]] * batch, device=device).to(
                torch.bfloat16
            ),
        }

    def step() -> None:
        latents = torch.randn(batch, 4, lat, lat, device=device)
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (batch,), device=device)
        noisy = latents + noise  # the scheduler's arithmetic is negligible here
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred = unet(noisy, t, encoder_hidden_states=hidden, **extra).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bench_gpu(steps: int, batches: tuple[int, ...]) -> dict[str, Any]:
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    peak = measure_bf16_peak(device)
    print(f"{torch.cuda.get_device_name()}: measured bf16 matmul peak {peak:.0f} TFLOP/s")
    rows: list[dict[str, Any]] = []
    for name, (_cfg, native, fwd_tflops, _ctx) in GPU_MODELS.items():
        try:
            unet = _lora_unet(name, device)
        except torch.OutOfMemoryError:
            rows.append({"model": name, "checkpointing": False, "error": "OOM at load"})
            continue
        for checkpointing in (False, True):
            if checkpointing:
                unet.enable_gradient_checkpointing()
            else:
                unet.disable_gradient_checkpointing()
            for res in (512, 1024):
                for batch in batches:
                    row: dict[str, Any] = {
                        "model": name,
                        "resolution": res,
                        "batch": batch,
                        "checkpointing": checkpointing,
                    }
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                    try:
                        step = _gpu_step_fn(name, unet, res, batch, device)
                        for _ in range(3):
                            step()
                        torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        for _ in range(steps):
                            step()
                        torch.cuda.synchronize()
                        dt = (time.perf_counter() - t0) / steps
                        flops = 3 * fwd_tflops * (res / native) ** 2 * batch * 1e12
                        row.update(
                            steps_per_s=round(1 / dt, 3),
                            samples_per_s=round(batch / dt, 2),
                            s_per_step=round(dt, 4),
                            mfu=round(flops / dt / (peak * 1e12), 3),
                            peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                        )
                    except torch.OutOfMemoryError:
                        row["error"] = "OOM"
                    except RuntimeError as err:
                        if "out of memory" not in str(err).lower():
                            raise
                        row["error"] = "OOM"
                    rows.append(row)
                    print(_fmt_gpu(row), flush=True)
        del unet
        torch.cuda.empty_cache()
    return {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "bf16_peak_tflops": round(peak, 1),
        "lora_rank": 16,
        "rows": rows,
        "summary": {
            _row_name(r): r.get("steps_per_s", r.get("error")) for r in rows if "batch" in r
        },
    }


def _row_name(r: dict[str, Any]) -> str:
    ckpt = "ckpt" if r["checkpointing"] else "nockpt"
    return f"{r['model']}_{r['resolution']}_b{r['batch']}_{ckpt}_steps_per_s"


def _fmt_gpu(r: dict[str, Any]) -> str:
    head = (
        f"{r['model']:5} {r.get('resolution', '-'):>5}² b{r.get('batch', '-'):<3}"
        f" ckpt={'on ' if r['checkpointing'] else 'off'}"
    )
    if "error" in r:
        return f"{head}  {r['error']}"
    return (
        f"{head}  {r['steps_per_s']:7.2f} steps/s  {r['samples_per_s']:7.2f} samples/s"
        f"  MFU {r['mfu']:.1%}  mem {r['peak_mem_gib']} GiB"
    )


# ---- CPU: tiny models ----------------------------------------------------------------------


def _crops(resolution: int) -> tuple[list[Any], float]:
    from services.trainer.preprocess import CropGeometry, Preprocessor

    photos = [(p.name, p.read_bytes()) for p in sorted((FACES / "obama").glob("*.jpg"))]
    pre = Preprocessor.load(MODELS / "face", CropGeometry(resolution))
    t0 = time.perf_counter()
    result = pre.run(photos)
    return result.crops, time.perf_counter() - t0


def bench_cpu(order_steps: int | None, peer_steps: tuple[int, ...] | None = None) -> dict[str, Any]:
    from models.tiny_diffusion import build
    from services.trainer.checkpointing import MemoryCheckpointStore
    from services.trainer.lora_training import TrainConfig, train_lora

    crops, preprocess_s = _crops(64)
    out: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "photos": len(crops),
        "preprocess_s": round(preprocess_s, 2),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("sd15", "sdxl"):
            base = build(kind, MODELS / f"tiny-{kind}") if MODELS.is_dir() else None
            base = base or build(kind, Path(tmp) / kind)
            cfg = TrainConfig(
                class_word="man",
                rank=16,
                steps=100,
                validation_every=100,
                validation_images=1,
                validation_inference_steps=2,
                device="cpu",
            )
            res = train_lora(base, crops, cfg)
            out[f"{kind}_s_per_step"] = round(res.seconds_per_step, 4)
            print(f"tiny {kind}: {res.seconds_per_step * 1000:.1f} ms/step (rank 16, batch 1)")
        base = build("sd15", MODELS / "tiny-sd15")
        steps = order_steps or min(1500, max(100, 100 * len(crops)))
        cfg = TrainConfig(class_word="man", rank=16, steps=steps, device="cpu")
        t0 = time.perf_counter()
        res = train_lora(base, crops, cfg, checkpoint_store=MemoryCheckpointStore())
        train_s = time.perf_counter() - t0
        out.update(
            order_steps=steps,
            order_train_s=round(train_s, 2),
            order_s=round(train_s + preprocess_s, 2),
            order_s_per_step=round(res.seconds_per_step, 4),
            validations=len(res.validations),
        )
        print(
            f"order (tiny sd15, {len(crops)} photos, {steps} steps, {len(res.validations)} "
            f"validations): {train_s + preprocess_s:.1f} s "
            f"(preprocess {preprocess_s:.1f} s, {res.seconds_per_step * 1000:.1f} ms/step)"
        )
    out["peer"] = bench_peer(crops, peer_steps or PEER_STEPS)
    out["summary"] = {
        "tiny_sd15_s_per_step": out["sd15_s_per_step"],
        "tiny_sdxl_s_per_step": out["sdxl_s_per_step"],
        "tiny_order_s": out["order_s"],
        **_peer_summary(out["peer"]),
    }
    return out


# ---- CPU: against diffusers' DreamBooth-LoRA script -----------------------------------------

# diffusers' examples/dreambooth/train_dreambooth_lora.py, fetched by the person running the
# bench (it is not part of this repository): the path in HS_BENCH_DREAMBOOTH_SCRIPT, else the
# cache below. Measured with the v0.40.0-release copy (commit d035dcd7cc; the script differs
# from main only in its min-version line and runs under the pinned diffusers 0.42.1).
PEER_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / "headshots"
    / "peers"
    / "train_dreambooth_lora.py"
)
PEER_STEPS = (10, 60)
PEER_LR = 1e-4
# The script's only torchvision use is a Resize/Crop/ToTensor/Normalize chain. torchvision's
# wheel does not load against the CPU torch build pinned here, so the script runs under a
# small runner (in a temporary folder) that imports transformers, peft and diffusers first
# (they then see no torchvision, as in this venv) and only then registers this stand-in as
# `torchvision.transforms` for the script: at 64² resize and crop are identities, ToTensor
# and Normalize compute what torchvision computes.
_PEER_RUNNER = """
import runpy
import sys
import types

import diffusers  # noqa: F401
import peft  # noqa: F401
import transformers  # noqa: F401

import standin_transforms

tv = types.ModuleType("torchvision")
tv.transforms = standin_transforms
sys.modules["torchvision"] = tv
sys.modules["torchvision.transforms"] = standin_transforms
script = sys.argv[1]
sys.argv = [script, *sys.argv[2:]]
runpy.run_path(script, run_name="__main__")
"""
_TRANSFORMS_STANDIN = """
import enum
import numpy as np
import torch

class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    LANCZOS = "lanczos"

_PIL = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}

class Compose:
    def __init__(self, ts):
        self.ts = ts
    def __call__(self, x):
        for t in self.ts:
            x = t(x)
        return x

class Resize:
    def __init__(self, size, interpolation=InterpolationMode.BILINEAR):
        self.size, self.mode = size, _PIL[interpolation.value]
    def __call__(self, im):
        w, h = im.size
        if min(w, h) == self.size:
            return im
        s = self.size / min(w, h)
        return im.resize((round(w * s), round(h * s)), self.mode)

class _Crop:
    def __init__(self, size):
        self.size = size
    def __call__(self, im):
        w, h = im.size
        left, top = self.offset(w - self.size, h - self.size)
        return im.crop((left, top, left + self.size, top + self.size))

class CenterCrop(_Crop):
    def offset(self, dw, dh):
        return dw // 2, dh // 2

class RandomCrop(_Crop):
    def offset(self, dw, dh):
        return int(torch.randint(0, dw + 1, ())), int(torch.randint(0, dh + 1, ()))

class ToTensor:
    def __call__(self, im):
        a = np.asarray(im, dtype=np.float32) / 255.0
        return torch.from_numpy(a).permute(2, 0, 1).contiguous()

class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean[0], std[0]
    def __call__(self, t):
        return (t - self.mean) / self.std
"""


def peer_script() -> Path | None:
    env = os.environ.get("HS_BENCH_DREAMBOOTH_SCRIPT")
    path = Path(env) if env else PEER_CACHE
    return path if path.is_file() else None


def _run_peer(script: Path, base: Path, instance_dir: Path, out: Path, steps: int, shim: Path):
    import subprocess

    args = [
        sys.executable,
        str(shim / "run_peer.py"),
        str(script),
        f"--pretrained_model_name_or_path={base}",
        f"--instance_data_dir={instance_dir}",
        "--instance_prompt=a photo of ohwx man",
        f"--output_dir={out}",
        "--resolution=64",
        "--train_batch_size=1",
        f"--max_train_steps={steps}",
        f"--learning_rate={PEER_LR}",
        "--lr_scheduler=constant",
        "--lr_warmup_steps=0",
        "--rank=16",
        "--seed=0",
        "--mixed_precision=no",
        "--checkpointing_steps=100000",
        "--dataloader_num_workers=0",
        "--report_to=tensorboard",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(shim), str(ROOT)]),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    }
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=out.parent, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"peer script failed:\n{proc.stderr[-3000:]}")
    return seconds, (out / "pytorch_lora_weights.safetensors").read_bytes()


def _heldout_loss(base: Path, adapter: bytes, held: list[Any], prompt: str) -> float:
    from safetensors.torch import load

    from services.trainer.dataset import encode_latents
    from services.trainer.lora_training import DiffusionModels, denoising_loss

    models = DiffusionModels(base, torch.device("cpu"), torch.float32)
    models.pipeline().load_lora_weights(load(adapter), adapter_name="bench_adapter")
    cond = models.encode_prompts([prompt])
    latents = encode_latents(models.vae, [c.image for c in held]).mean
    quantiles = [i / 20 for i in range(1, 20)]
    return (
        sum(denoising_loss(models, latents, cond, seed=s, quantiles=quantiles) for s in (11, 12))
        / 2
    )


def _peer_summary(peer: dict[str, Any]) -> dict[str, Any]:
    if "ours_speedup" not in peer:
        return {}
    return {
        "vs_dreambooth_script_speedup": peer["ours_speedup"],
        "ours_heldout_loss": peer["ours_heldout_loss"],
        "dreambooth_script_heldout_loss": peer["peer_heldout_loss"],
    }


def bench_peer(crops: list[Any], peer_steps: tuple[int, ...] = (10, 60)) -> dict[str, Any]:
    """Seconds per step (difference of a short and a longer run, so start-up and the final
    save cancel out) and the held-out loss of both adapters, same data and settings."""
    from PIL import Image

    from models.tiny_diffusion import build
    from services.trainer.lora_training import TrainConfig, split_holdout, train_lora

    script = peer_script()
    if script is None:
        msg = (
            "skipped: diffusers' train_dreambooth_lora.py not found (set "
            f"HS_BENCH_DREAMBOOTH_SCRIPT or put it at {PEER_CACHE}; take it from "
            "github.com/huggingface/diffusers examples/dreambooth at the pinned version)"
        )
        print(f"peer (diffusers DreamBooth-LoRA script): {msg}")
        return {"skipped": msg}
    base = build("sd15", MODELS / "tiny-sd15")
    config = TrainConfig(
        class_word="man",
        rank=16,
        learning_rate=PEER_LR,
        batch_size=1,
        flip_augment=False,  # the script does not mirror
        device="cpu",
    )
    train, held = split_holdout(crops, config)
    ours_t: dict[int, float] = {}
    peer_t: dict[int, float] = {}
    adapters: dict[str, bytes] = {}
    ours_sps: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shim = root / "shim"
        shim.mkdir()
        (shim / "run_peer.py").write_text(_PEER_RUNNER)
        (shim / "standin_transforms.py").write_text(_TRANSFORMS_STANDIN)
        instance = root / "instance"
        instance.mkdir()
        for c in train:
            Image.fromarray(c.image).save(instance / f"{Path(c.name).stem}.png")
        # Untimed first run: the first train_lora in a process pays imports, allocator
        # growth and kernel selection (8 s of a 9 s 5-step run); the script, a fresh process
        # every time, pays its start-up in both of its runs, so the difference cancels it.
        train_lora(base, crops, config.model_copy(update={"steps": 2, "validation_every": 2}))
        # Alternating: ours, the script, ours, the script.
        for steps in peer_steps:
            cfg = config.model_copy(update={"steps": steps, "validation_every": steps})
            t0 = time.perf_counter()
            res = train_lora(base, crops, cfg)
            ours_t[steps] = time.perf_counter() - t0
            ours_sps[steps] = res.seconds_per_step
            adapters["ours"] = res.adapter
            peer_t[steps], adapters["peer"] = _run_peer(
                script, base, instance, root / f"peer-{steps}", steps, shim
            )
            print(
                f"  {steps} steps: ours {ours_t[steps]:.1f} s, script {peer_t[steps]:.1f} s",
                flush=True,
            )
    lo, hi = peer_steps
    ours_step = (ours_t[hi] - ours_t[lo]) / (hi - lo)
    peer_step = (peer_t[hi] - peer_t[lo]) / (hi - lo)
    prompt = config.instance_prompt
    row = {
        "script": str(script),
        "model": "tiny-sd15 (64² images, 8² latents)",
        "train_photos": len(train),
        "heldout_photos": [c.name for c in held],
        "settings": f"rank 16, lr {PEER_LR}, batch 1, constant, seed 0, fp32, {hi} steps",
        "ours_s_per_step": round(ours_step, 4),
        "ours_s_per_step_inside": round(ours_sps[hi], 4),
        "peer_s_per_step": round(peer_step, 4),
        "ours_speedup": round(peer_step / ours_step, 2),
        "ours_wall_s": {str(k): round(v, 2) for k, v in ours_t.items()},
        "peer_wall_s": {str(k): round(v, 2) for k, v in peer_t.items()},
        "ours_heldout_loss": round(_heldout_loss(base, adapters["ours"], held, prompt), 5),
        "peer_heldout_loss": round(_heldout_loss(base, adapters["peer"], held, prompt), 5),
    }
    print(
        f"peer (diffusers DreamBooth-LoRA script, tiny SD1.5 64²): ours {ours_step * 1000:.1f}"
        f" ms/step, script {peer_step * 1000:.1f} ms/step ({row['ours_speedup']}x); held-out "
        f"loss after {hi} steps: ours {row['ours_heldout_loss']}, script "
        f"{row['peer_heldout_loss']}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="real-config UNets on the GPU")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per GPU config")
    parser.add_argument("--batches", default="1,4", help="GPU batch sizes")
    parser.add_argument("--order-steps", type=int, default=0, help="CPU order steps (0: rule)")
    parser.add_argument(
        "--peer-only", action="store_true", help="only the diffusers-script comparison (CPU)"
    )
    parser.add_argument(
        "--peer-steps", default=",".join(map(str, PEER_STEPS)), help="short,long step counts"
    )
    ns = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if ns.gpu:
        if not torch.cuda.is_available():
            print("no CUDA device", file=sys.stderr)
            return 1
        doc = bench_gpu(ns.steps, tuple(int(b) for b in ns.batches.split(",")))
        path = RESULTS / "trainer_gpu.json"
    else:
        peer_steps = tuple(int(x) for x in ns.peer_steps.split(","))
        if ns.peer_only:
            crops, _ = _crops(64)
            doc = {"threads": torch.get_num_threads(), "peer": bench_peer(crops, peer_steps)}
            doc["summary"] = _peer_summary(doc["peer"])
            path = RESULTS / "trainer_peer.json"
        else:
            doc = bench_cpu(ns.order_steps or None, peer_steps)
            path = RESULTS / "trainer.json"
    doc["date"] = time.strftime("%Y-%m-%d")
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
