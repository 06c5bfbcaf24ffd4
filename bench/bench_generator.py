"""Generator benchmark.

CPU (default): on a tiny and a mid-size SD1.5-class pipeline built from configs (random
weights), in one run per model:
- images/s for 8 images in one batched call vs 8 calls of one image (the ratio is what
  batching buys on this hardware; the images are the same, see the integration tests);
- adapter swap time (hot-swap of an equal-target LoRA into the slot), fuse and exact unfuse;
- preview latency (img2img from a fixture selfie, 2 images).

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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FACES = (ROOT / "tests" / "fixtures" / "faces").resolve()

# ---- GPU: real UNet configs (values of the published config.json files) --------------------

SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "downsample_padding": 1,
}
SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
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


# ---- CPU: whole pipeline, tiny and mid-size -------------------------------------------------

CPU_MODELS: dict[str, dict[str, Any]] = {
    # 32² images (latent 4×... ): the tests' model.
    "tiny": {"unet_channels": (32, 64), "sample_size": 16, "steps": 10},
    # 256² images, a UNet of ~20M parameters: big enough that compute dominates overhead.
    "mid": {"unet_channels": (64, 128, 256), "sample_size": 32, "steps": 10},
}


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


def bench_cpu() -> dict[str, Any]:
    import numpy as np

    from services.generator.pipeline import WarmPipeline
    from services.generator.preview import Previewer
    from services.generator.settings import GeneratorSettings
    from services.policy.styles import load_catalogue
    from tests.support.generator_models import make_adapter

    selfie = next(iter(sorted((FACES / "obama").glob("*.jp*g")))).read_bytes()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in CPU_MODELS.items():
            path = build_cpu_pipeline(Path(tmp) / name, spec["unet_channels"], spec["sample_size"])
            settings = GeneratorSettings(
                base_model=path, steps=spec["steps"], device="cpu", preview_steps=spec["steps"]
            )
            warm = WarmPipeline.load(settings)
            a = make_adapter(warm.pipe.unet, 1)
            b = make_adapter(warm.pipe.unet, 2)
            warm.activate("a", a)
            n = 8
            prompts = [f"photo of hsk person, style {i}" for i in range(n)]
            negs = ["blurry"] * n
            seeds = list(range(n))
            warm.render(prompts[:2], negs[:2], seeds[:2])  # warm-up
            t0 = time.perf_counter()
            batched = warm.render(prompts, negs, seeds)
            t_batch = time.perf_counter() - t0
            t0 = time.perf_counter()
            singles = [
                warm.render([p], [q], [s])[0] for p, q, s in zip(prompts, negs, seeds, strict=True)
            ]
            t_single = time.perf_counter() - t0
            max_diff = max(
                int(np.abs(x.astype(int) - y.astype(int)).max())
                for x, y in zip(batched, singles, strict=True)
            )
            swaps = []
            for i in range(6):
                swaps.append(warm.activate("b" if i % 2 == 0 else "a", b if i % 2 == 0 else a))
            t0 = time.perf_counter()
            warm.fuse()
            fuse_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            warm.unfuse()
            unfuse_ms = (time.perf_counter() - t0) * 1000
            prev = Previewer(settings, warm, load_catalogue())
            prev.preview(selfie, "navy-blazer-soft-studio-grey", 1, 0)  # builds img2img once
            lat = [
                prev.preview(selfie, "navy-blazer-soft-studio-grey", 2, s).seconds for s in range(3)
            ]
            row = {
                "model": name,
                "resolution": warm.width,
                "unet_params_m": round(
                    sum(p.numel() for p in warm.pipe.unet.parameters()) / 1e6, 1
                ),
                "steps": spec["steps"],
                "batched_img_s": round(n / t_batch, 3),
                "single_img_s": round(n / t_single, 3),
                "batched_over_single": round(t_single / t_batch, 2),
                "batch_vs_single_max_diff_u8": max_diff,
                "swap_modes": sorted({s.mode for s in swaps}),
                "swap_ms_median": round(statistics.median(s.seconds for s in swaps) * 1000, 1),
                "fuse_ms": round(fuse_ms, 1),
                "unfuse_exact_ms": round(unfuse_ms, 1),
                "preview_2img_s_median": round(statistics.median(lat), 3),
            }
            rows.append(row)
            print(
                f"{name:5} {row['resolution']:4}² UNet {row['unet_params_m']:6.1f}M "
                f"batched {row['batched_img_s']:7.2f} img/s  single {row['single_img_s']:7.2f} "
                f"img/s  ratio {row['batched_over_single']:.2f}x  swap {row['swap_ms_median']} ms"
                f" ({'/'.join(row['swap_modes'])})  fuse {row['fuse_ms']} ms  preview(2) "
                f"{row['preview_2img_s_median']} s",
                flush=True,
            )
            del warm
    summary: dict[str, float] = {}
    for r in rows:
        m = r["model"]
        summary |= {
            f"{m}_batched_img_s": r["batched_img_s"],
            f"{m}_batched_over_single": r["batched_over_single"],
            f"{m}_swap_ms": r["swap_ms_median"],
            f"{m}_preview_2img_s": r["preview_2img_s_median"],
        }
    return {
        "device": "cpu",
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.machine(),
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
        result = bench_cpu()
        out = args.out or RESULTS / "generator.json"
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
