"""Generator benchmark.

CPU (default): on a tiny and a mid-size SD1.5-class pipeline built from configs (random
weights) with a rank-16 adapter of realistic magnitude, in one run per model, alternating:
- the generator's own path (`WarmPipeline`, batch size measured by its probe) against plain
  diffusers (`StableDiffusionPipeline`, same scheduler, `load_lora_weights`) at one image per
  call and at the same batch; images/s, the ratios, and the largest pixel difference
  between the two for equal seeds;
- adapter swap time, preview latency (img2img from a fixture selfie, 2 images).
Sizes are labelled as image size and latent size (these VAEs downsample by 2).

`--gpu`: SD1.5-architecture (512², 25 steps) and SDXL-architecture (1024², 30 steps) UNets
from their published configs with random weights, bf16, channels-last, SDPA, at batch
1..32 with classifier-free guidance (2 samples per image): UNet images/s and MFU against the
bf16 matmul peak measured in the same run. Only `UNet2DConditionModel(**config)`: no
pipeline, no download. Text encoder, scheduler arithmetic and VAE decode are left out (they
are a few % of a real image at these step counts). FLOPs per UNet forward per sample:
0.803 T (SD1.5 at 512²), 6.761 T (SDXL at 1024²) (project figures, ARCHITECTURE issue 5).

Prints a table and writes bench/results/generator.json (CPU) or generator_gpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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

# ---- GPU: real UNet configs (values of the published config.json files) --------------------

# The published configs' values live with the builder of full-size models.
GPU_MODELS = {
    # name: (config, resolution, steps, TFLOPs per UNet forward per sample, text tokens dim)
    "sd15": (SD15_UNET, 512, 25, 0.803, 768),
    "sdxl": (SDXL_UNET, 1024, 30, 6.761, 2048),
}
BATCHES = (1, 2, 4, 8, 16, 32)


def measure_bf16_peak(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """TFLOP/s of a large bf16 matmul: the denominator of MFU, measured, not from a sheet."""
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


def gpu_unet_inputs(name: str, samples: int, device: torch.device) -> dict[str, Any]:
    _cfg, res, _steps, _tf, ctx_dim = GPU_MODELS[name]
    lat = res // 8
    kw: dict[str, Any] = {
        "sample": torch.randn(samples, 4, lat, lat, device=device, dtype=torch.bfloat16).to(
            memory_format=torch.channels_last
        ),
        "timestep": torch.tensor(500, device=device),
        "encoder_hidden_states": torch.randn(
            samples, 77, ctx_dim, device=device, dtype=torch.bfloat16
        ),
    }
    if name == "sdxl":
        kw["added_cond_kwargs"] = {
            "text_embeds": torch.randn(samples, 1280, device=device, dtype=torch.bfloat16),
            "time_ids": torch.tensor(
                [[res, res, 0, 0, res, res]] * samples, device=device, dtype=torch.bfloat16
            ),
        }
    return kw


def bench_gpu(compile_unet: bool, batches: tuple[int, ...]) -> dict[str, Any]:
    from diffusers import UNet2DConditionModel

    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    peak = measure_bf16_peak(device)
    print(f"{torch.cuda.get_device_name()}: measured bf16 matmul peak {peak:.0f} TFLOP/s")
    rows = []
    for name, (cfg, res, steps, tflops, _) in GPU_MODELS.items():
        with torch.device(device):
            unet = UNet2DConditionModel(**cfg)
        unet = unet.to(dtype=torch.bfloat16, memory_format=torch.channels_last).eval()
        params = sum(p.numel() for p in unet.parameters()) / 1e9
        fwd = torch.compile(unet, mode="max-autotune-no-cudagraphs") if compile_unet else unet
        for batch in batches:
            samples = 2 * batch  # classifier-free guidance: uncond + cond in one forward
            row: dict[str, Any] = {
                "model": name,
                "resolution": res,
                "steps": steps,
                "batch": batch,
                "params_b": round(params, 3),
            }
            try:
                kw = gpu_unet_inputs(name, samples, device)
                with torch.inference_mode():
                    for _ in range(3):
                        fwd(**kw)
                    torch.cuda.synchronize()
                    reps = max(3, min(20, 64 // batch))
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        fwd(**kw)
                    torch.cuda.synchronize()
                t_fwd = (time.perf_counter() - t0) / reps
                achieved = samples * tflops / t_fwd
                row |= {
                    "forward_ms": round(t_fwd * 1000, 2),
                    "images_per_s": round(batch / (steps * t_fwd), 3),
                    "tflops": round(achieved, 1),
                    "mfu": round(achieved / peak, 3),
                    "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
                }
            except torch.OutOfMemoryError:
                row["error"] = "out of memory"
            finally:
                kw = {}
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            rows.append(row)
            print(_fmt_gpu(row), flush=True)
        del unet, fwd
        torch.cuda.empty_cache()
    return {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "bf16_peak_tflops": round(peak, 1),
        "compile": compile_unet,
        "rows": rows,
    }


def _fmt_gpu(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['model']:5} {r['resolution']:5}² b={r['batch']:<3} {r['error']}"
    return (
        f"{r['model']:5} {r['resolution']:5}² b={r['batch']:<3} fwd {r['forward_ms']:8.2f} ms"
        f"  {r['images_per_s']:7.3f} img/s  {r['tflops']:6.1f} TFLOP/s  MFU {r['mfu']:.3f}"
        f"  mem {r['peak_mem_gib']} GiB"
    )


# ---- CPU: whole pipeline, tiny and mid-size, against plain diffusers -----------------------

CPU_MODELS: dict[str, dict[str, Any]] = {
    # The tests' model (VAE factor 2): 32² images, 16² latents.
    "tiny": {"unet_channels": (32, 64), "sample_size": 16, "steps": 10, "images": 16},
    # ~20 M-parameter UNet, 64² images, 32² latents: compute dominates overhead.
    "mid": {"unet_channels": (64, 128, 256), "sample_size": 32, "steps": 10, "images": 8},
}
# `--quick` (a busy shared machine): fewer images and steps, same comparisons.
QUICK: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 6, "images": 8},
    "mid": {"steps": 4, "images": 4},
}
# A trained DreamBooth LoRA changes each projection by a few per cent of its weight; the
# bench adapter's update BA is scaled to this share of ||W|| (Frobenius) per layer, so the
# LoRA branch is realistic in magnitude without being trained (our assumption, not a
# published figure).
ADAPTER_RANK = 16
ADAPTER_RELATIVE_NORM = 0.03
REPEATS = 2


def build_cpu_pipeline(out: Path, unet_channels: tuple[int, ...], sample_size: int) -> Path:
    from diffusers import UNet2DConditionModel

    from tests.support.generator_models import _build_fallback

    _build_fallback(out)
    if unet_channels != (32, 64):
        n = len(unet_channels)
        torch.manual_seed(1)
        unet = UNet2DConditionModel(
            block_out_channels=unet_channels,
            layers_per_block=2,
            sample_size=sample_size,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        unet.save_pretrained(out / "unet")
    return out


def realistic_adapter(unet: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A rank-16 LoRA in the trainer's file format whose update is ADAPTER_RELATIVE_NORM of
    each base weight (see above)."""
    from tests.support.generator_models import make_adapter

    sd = make_adapter(unet, seed, rank=ADAPTER_RANK)
    for key in [k for k in sd if "lora.down" in k]:
        up_key = key.replace("lora.down", "lora.up")
        path = key[len("unet.") :].split(".lora.")[0]
        weight = unet.get_submodule(path).weight.detach().float()
        delta = sd[up_key].float() @ sd[key].float()
        scale = ADAPTER_RELATIVE_NORM * weight.norm() / delta.norm()
        sd[up_key] = (sd[up_key] * scale).contiguous()
    return sd


def _plain_pipeline(path: Path, lora: dict[str, torch.Tensor], scheduler: str) -> Any:
    """What a user of diffusers alone would write: the pipeline, the same scheduler, the
    LoRA loaded with load_lora_weights."""
    from diffusers import StableDiffusionPipeline

    from services.generator.pipeline import _scheduler_for

    pipe = StableDiffusionPipeline.from_pretrained(
        str(path), safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    pipe.scheduler = _scheduler_for(scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(dict(lora), adapter_name="order")
    return pipe


def _plain_render(pipe: Any, prompts: list[str], negs: list[str], seeds: list[int], **kw: Any):
    import numpy as np

    out = pipe(
        prompt=prompts,
        negative_prompt=negs,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        output_type="np",
        **kw,
    ).images
    return [(np.clip(i, 0, 1) * 255).round().astype(np.uint8) for i in out]


def _max_diff(x: list[Any], y: list[Any]) -> int:
    import numpy as np

    return max(int(np.abs(p.astype(int) - q.astype(int)).max()) for p, q in zip(x, y, strict=True))


def _bench_model(name: str, spec: dict[str, Any], path: Path, selfie: bytes) -> dict[str, Any]:
    from services.generator.pipeline import WarmPipeline
    from services.generator.preview import Previewer
    from services.generator.settings import GeneratorSettings
    from services.policy.styles import load_catalogue

    settings = GeneratorSettings(
        base_model=path, steps=spec["steps"], device="cpu", preview_steps=spec["steps"]
    )
    warm = WarmPipeline.load(settings)
    a = realistic_adapter(warm.pipe.unet, 1)
    b = realistic_adapter(warm.pipe.unet, 2)
    warm.activate("a", a)
    n = spec["images"]
    prompts = [f"photo of hsk person, style {i}" for i in range(n)]
    negs = ["blurry"] * n
    seeds = list(range(n))
    w, h = warm.width, warm.height
    t0 = time.perf_counter()
    batch = warm.auto_batch_size(w, h)
    probe_s = time.perf_counter() - t0
    probe = warm.batch_probes[(w, h)]
    plain = _plain_pipeline(path, a, settings.scheduler)
    kw = {
        "num_inference_steps": spec["steps"],
        "guidance_scale": settings.guidance_scale,
        "width": w,
        "height": h,
    }

    def ours() -> list[Any]:
        out: list[Any] = []
        for i in range(0, n, batch):
            sl = slice(i, i + batch)
            out += warm.render(prompts[sl], negs[sl], seeds[sl])
        return out

    def plain_single() -> list[Any]:
        return [
            _plain_render(plain, [p], [q], [s], **kw)[0]
            for p, q, s in zip(prompts, negs, seeds, strict=True)
        ]

    def plain_batched() -> list[Any]:
        out: list[Any] = []
        for i in range(0, n, batch):
            sl = slice(i, i + batch)
            out += _plain_render(plain, prompts[sl], negs[sl], seeds[sl], **kw)
        return out

    runs = {"ours": ours, "plain_single": plain_single, "plain_batched": plain_batched}
    # Warm-up: first calls pay allocations.
    warm.render(prompts[:2], negs[:2], seeds[:2])
    _plain_render(plain, prompts[:2], negs[:2], seeds[:2], **kw)
    times: dict[str, list[float]] = {k: [] for k in runs}
    images: dict[str, list[Any]] = {}
    # Alternating repeats: a neighbour's load on the shared machine hits all three alike.
    for _ in range(REPEATS):
        for key, fn in runs.items():
            t0 = time.perf_counter()
            images[key] = fn()
            times[key].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}

    swaps = [warm.activate("b" if i % 2 == 0 else "a", b if i % 2 == 0 else a) for i in range(6)]
    prev = Previewer(settings, warm, load_catalogue())
    prev.preview(selfie, "navy-blazer-soft-studio-grey", 1, 0)  # builds img2img once
    lat = [prev.preview(selfie, "navy-blazer-soft-studio-grey", 2, s).seconds for s in range(3)]
    factor = warm.pipe.vae_scale_factor
    return {
        "model": name,
        "image_size": f"{w}x{h}",
        "latent_size": f"{w // factor}x{h // factor}",
        "unet_params_m": round(sum(p.numel() for p in warm.pipe.unet.parameters()) / 1e6, 1),
        "steps": spec["steps"],
        "images": n,
        "adapter": f"rank {ADAPTER_RANK}, |BA| = {ADAPTER_RELATIVE_NORM:.0%} of |W|",
        "slot_ranks": sorted(warm.slot_ranks()),
        "batch_measured": batch,
        "probe_s": round(probe_s, 2),
        "probe_img_s": {str(k): round(v, 2) for k, v in probe.images_per_s.items()},
        "ours_img_s": round(n / best["ours"], 3),
        "plain_single_img_s": round(n / best["plain_single"], 3),
        "plain_batched_img_s": round(n / best["plain_batched"], 3),
        "ours_over_plain_single": round(best["plain_single"] / best["ours"], 2),
        "ours_over_plain_same_batch": round(best["plain_batched"] / best["ours"], 2),
        "max_diff_u8_vs_plain_same_batch": _max_diff(images["ours"], images["plain_batched"]),
        "max_diff_u8_vs_plain_single": _max_diff(images["ours"], images["plain_single"]),
        "swap_modes": sorted({s.mode for s in swaps}),
        "swap_ms_median": round(statistics.median(s.seconds for s in swaps) * 1000, 1),
        "preview_2img_s_median": round(statistics.median(lat), 3),
        "times_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
    }


def bench_cpu(quick: bool = False) -> dict[str, Any]:
    selfie = next(iter(sorted((FACES / "obama").glob("*.jp*g")))).read_bytes()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in CPU_MODELS.items():
            spec = spec | (QUICK[name] if quick else {})
            path = build_cpu_pipeline(Path(tmp) / name, spec["unet_channels"], spec["sample_size"])
            row = _bench_model(name, spec, path, selfie)
            rows.append(row)
            print(
                f"{name:5} image {row['image_size']} (latent {row['latent_size']}) UNet "
                f"{row['unet_params_m']}M, {row['images']} images, {row['steps']} steps, batch "
                f"{row['batch_measured']} (measured in {row['probe_s']} s): ours "
                f"{row['ours_img_s']} img/s; plain diffusers 1/call {row['plain_single_img_s']}"
                f" img/s (ours {row['ours_over_plain_single']}x); plain at the same batch "
                f"{row['plain_batched_img_s']} img/s (ours {row['ours_over_plain_same_batch']}x);"
                f" max diff vs plain {row['max_diff_u8_vs_plain_same_batch']}/255; swap "
                f"{row['swap_ms_median']} ms ({'/'.join(row['swap_modes'])})",
                flush=True,
            )
    summary: dict[str, float] = {}
    for r in rows:
        m = r["model"]
        summary |= {
            f"{m}_img_s": r["ours_img_s"],
            f"{m}_over_plain_single": r["ours_over_plain_single"],
            f"{m}_over_plain_same_batch": r["ours_over_plain_same_batch"],
            f"{m}_batch_measured": r["batch_measured"],
            f"{m}_swap_ms": r["swap_ms_median"],
        }
    return {
        "device": "cpu",
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "torch": torch.__version__,
        "rows": rows,
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", action="store_true", help="UNet throughput on a CUDA GPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet (GPU)")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="CPU: fewer images and steps")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    if args.gpu:
        if not torch.cuda.is_available():
            print("--gpu: no CUDA device here", file=sys.stderr)
            return 2
        result = bench_gpu(args.compile, tuple(int(b) for b in args.batches.split(",")))
        out = args.out or RESULTS / (
            "generator_gpu_compile.json" if args.compile else "generator_gpu.json"
        )
    else:
        result = bench_cpu(args.quick)
        out = args.out or RESULTS / "generator.json"
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
