"""Tiny diffusion models and LoRA adapters for the generator tests (built from configs,
fixed seeds, no downloads)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def tiny_sd15(out: Path) -> Path:
    """The project's tiny SD1.5-class pipeline (models.tiny_diffusion) when it exists,
    otherwise a throwaway one built here from configs."""
    if (out / "model_index.json").is_file():
        return out
    if (REPO / "models" / "tiny_diffusion.py").is_file():
        subprocess.run(
            [sys.executable, "-m", "models.tiny_diffusion", "--out", str(out)],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        return out
    _build_fallback(out)
    return out


def _byte_vocab() -> dict[str, int]:
    # GPT-2 style byte-to-unicode table: every byte is a token, so any text tokenises.
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            chars.append(256 + extra)
            extra += 1
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[chr(c)] = len(vocab)
    for c in chars:
        vocab[chr(c) + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def _build_fallback(out: Path) -> None:
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out.mkdir(parents=True, exist_ok=True)
    vocab = _byte_vocab()
    tok_dir = out / "_tokenizer_src"
    tok_dir.mkdir(exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=32
    )
    torch.manual_seed(0)
    eos = vocab["<|endoftext|>"]
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=32,
            projection_dim=32,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=eos,
            pad_token_id=eos,
        )
    )
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )
    scheduler = DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
    )
    StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(out)


def make_adapter(unet: torch.nn.Module, seed: int, rank: int = 4) -> dict[str, torch.Tensor]:
    """A LoRA on the UNet attention projections with random non-zero weights, in the
    diffusers format the trainer writes (`unet.` prefix, lora.down/lora.up keys)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    work = copy.deepcopy(unet).to(torch.float32)
    if getattr(work, "peft_config", None):
        work.unload_lora()
    work.add_adapter(
        LoraConfig(
            r=rank,
            lora_alpha=rank,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights=False,
        ),
        adapter_name="tmp_test_adapter",
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in work.named_parameters():
            if "lora" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    sd = get_peft_model_state_dict(work, adapter_name="tmp_test_adapter")
    return {f"unet.{k}": v.contiguous() for k, v in convert_state_dict_to_diffusers(sd).items()}
