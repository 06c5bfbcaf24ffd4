"""The project's tiny diffusion models: built offline from configs, deterministic, cached,
shaped like SD1.5 / SDXL where the code depends on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.tiny_diffusion import (
    INSTANCE_TOKEN,
    build,
    build_vocab,
    bytes_to_unicode,
    is_complete,
    learn_merges,
)

ROOT = Path(__file__).resolve().parents[2]


def test_bpe_merges_make_prompt_words_single_tokens() -> None:
    merges = learn_merges({"photo": 3, "ohwx": 3, "headshot": 1}, 100)
    vocab = build_vocab(merges)
    for word in ("photo", "ohwx", "headshot"):
        assert word + "</w>" in vocab
    # Every byte is a token on its own, so any text tokenises.
    assert all(c in vocab for c in bytes_to_unicode().values())
    assert len(set(vocab.values())) == len(vocab)


def test_sd15_builds_offline_deterministically_and_is_cached(tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        subprocess.run(
            [sys.executable, "-m", "models.tiny_diffusion", "--out", str(out)],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
    for sub in ("unet/diffusion_pytorch_model.safetensors", "tokenizer/vocab.json"):
        assert (outs[0] / sub).read_bytes() == (outs[1] / sub).read_bytes(), sub
    t0 = time.perf_counter()
    build("sd15", outs[0])
    assert time.perf_counter() - t0 < 1.0  # cached: nothing is rebuilt
    assert is_complete(outs[0], "sd15") and not is_complete(outs[0], "sdxl")

    pipe = StableDiffusionPipeline.from_pretrained(outs[0])
    assert pipe.vae_scale_factor == 8 and pipe.vae.config.latent_channels == 4
    assert pipe.tokenizer.tokenize(f"a photo of {INSTANCE_TOKEN} man") == [
        "a</w>",
        "photo</w>",
        "of</w>",
        f"{INSTANCE_TOKEN}</w>",
        "man</w>",
    ]
    assert json.loads((outs[0] / "unet" / "config.json").read_text())["sample_size"] == 8


def test_sdxl_shape(tmp_path: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    out = build("sdxl", tmp_path / "xl")
    pipe = StableDiffusionXLPipeline.from_pretrained(out)
    assert pipe.unet.config.addition_embed_type == "text_time"
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    dims = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert pipe.unet.config.cross_attention_dim == dims


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        build("sd3", tmp_path / "x")
