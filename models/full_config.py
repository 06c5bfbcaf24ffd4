"""SD1.5- and SDXL-architecture pipelines at their published sizes, with random weights.

For GPU benchmarks of a whole order (bench/gpu/order.py): the same layer shapes, FLOPs and
memory as the real models, built from the values of their published config.json files, so
the production code paths run at full scale without downloading weights. The images are
noise. The tokenizer is the project's own (models/tiny_diffusion.py); the text encoders take
CLIP ViT-L/14 (and for SDXL also bigG/14) sizes.

    python -m models.full_config --kind sd15 --out var/models/full-sd15
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

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
# SD's VAE (both models): 4 levels, factor 8, 4 latent channels.
VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
}
# (hidden, layers, heads, intermediate, projection) of CLIP ViT-L/14 and OpenCLIP bigG/14.
CLIP_L = (768, 12, 12, 3072, 768)
CLIP_BIG_G = (1280, 32, 20, 5120, 1280)
KINDS = {"sd15": (SD15_UNET, 512, 0.18215), "sdxl": (SDXL_UNET, 1024, 0.13025)}


def _text_encoder(tokenizer: Any, size: tuple[int, int, int, int, int], projection: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    hidden, layers, heads, inter, proj = size
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        max_position_embeddings=77,
        projection_dim=proj,
        hidden_act="gelu" if projection else "quick_gelu",
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=eos,
        pad_token_id=eos,
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(config).eval()


def build(kind: str, out: Path, seed: int = 0) -> Path:
    """Write a diffusers folder of `kind` (fp16 safetensors) to `out`; cached by a marker."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    from models.tiny_diffusion import _scheduler, _tokenizer, write_tokenizer_files

    unet_config, resolution, scale = KINDS[kind]
    marker = out / "full_config.json"
    key = {"kind": kind, "seed": seed, "version": 1}
    if marker.is_file() and json.loads(marker.read_text()) == key:
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok_dir = out / "_tok"
    write_tokenizer_files(tok_dir)
    tokenizer = _tokenizer(tok_dir)
    unet = UNet2DConditionModel(**unet_config)
    vae = AutoencoderKL(**VAE, sample_size=resolution, scaling_factor=scale)
    if kind == "sd15":
        pipe: Any = StableDiffusionPipeline(
            vae=vae,
            text_encoder=_text_encoder(tokenizer, CLIP_L, projection=False),
            tokenizer=tokenizer,
            unet=unet,
            scheduler=_scheduler("sd15"),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=_text_encoder(tokenizer, CLIP_L, projection=False),
            text_encoder_2=_text_encoder(tokenizer, CLIP_BIG_G, projection=True),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=EulerDiscreteScheduler.from_config(_scheduler("sdxl").config),
        )
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
    marker.write_text(json.dumps(key))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(KINDS), default="sd15")
    parser.add_argument("--out", type=Path, required=True)
    ns = parser.parse_args(argv)
    print(build(ns.kind, ns.out))


if __name__ == "__main__":
    main()
