"""The trained adapter is an ordinary diffusers LoRA file: it loads into a fresh pipeline
with `load_lora_weights`, changes that pipeline's output for the same seed, and leaves the
base pipeline's output alone. The SDXL-shaped tiny model trains and saves the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load

from models.tiny_diffusion import build
from services.trainer.checkpointing import MemoryCheckpointStore
from services.trainer.lora_training import TrainConfig, adapter_metadata, train_lora
from services.trainer.preprocess import CropGeometry, Preprocessor

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def crops(models_dir: Path, faces_dir: Path) -> list:
    pre = Preprocessor.load(models_dir / "face", CropGeometry(64))
    photos = sorted((faces_dir / "obama").glob("*.jpg"))[:4]
    return pre.run([(p.name, p.read_bytes()) for p in photos]).crops


def _config(**kw: object) -> TrainConfig:
    base = dict(
        class_word="man",
        rank=8,
        alpha=16,  # scale 2: checks the scale is folded into the file
        learning_rate=2e-3,
        steps=30,
        validation_every=15,
        validation_images=1,
        validation_inference_steps=2,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _render(pipe: object, prompt: str) -> np.ndarray:
    out = pipe(  # type: ignore[operator]
        prompt,
        num_inference_steps=4,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(5),
        output_type="np",
    )
    return np.asarray(out.images[0])


def test_adapter_loads_with_load_lora_weights_and_changes_output(
    models_dir: Path, crops: list, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(2)
    base = build("sd15", models_dir / "tiny-sd15")
    config = _config(train_text_encoder=True)
    outcome = train_lora(base, crops, config, checkpoint_store=MemoryCheckpointStore())
    path = tmp_path / "lora.safetensors"
    path.write_bytes(outcome.adapter)

    sd = load(outcome.adapter)
    # diffusers' own layout: unet./text_encoder. prefixes, lora.down/lora.up pairs, no
    # alpha keys (the scale is folded in), every key names "lora" (the generator checks).
    assert any(k.startswith("unet.") and k.endswith("lora.down.weight") for k in sd)
    assert any(k.startswith("text_encoder.") for k in sd)
    assert all("lora" in k for k in sd)
    downs = [v for k, v in sd.items() if k.startswith("unet.") and k.endswith("lora.down.weight")]
    assert {v.shape[0] for v in downs} == {8}
    meta = adapter_metadata(outcome.adapter)
    assert meta["headshots.instance_prompt"] == "a photo of ohwx man"
    assert int(meta["headshots.chosen_step"]) == outcome.chosen_step

    prompt = outcome.instance_prompt
    plain = StableDiffusionPipeline.from_pretrained(base)
    plain.set_progress_bar_config(disable=True)
    before = _render(plain, prompt)

    fresh = StableDiffusionPipeline.from_pretrained(base)
    fresh.set_progress_bar_config(disable=True)
    fresh.load_lora_weights(str(path), adapter_name="trained_order_adapter")
    with_lora = _render(fresh, prompt)
    assert np.abs(with_lora - before).mean() > 1e-3

    # Same seed, same prompt: the base pipeline is untouched by the other's adapter ...
    np.testing.assert_array_equal(_render(plain, prompt), before)
    # ... and unloading the adapter gives the base output back.
    fresh.unload_lora_weights()
    np.testing.assert_allclose(_render(fresh, prompt), before, atol=1e-5)


def test_sdxl_tiny_model_trains_and_saves(models_dir: Path, crops: list, tmp_path: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    torch.set_num_threads(2)
    base = build("sdxl", models_dir / "tiny-sdxl")
    config = _config(steps=20, validation_every=10, prior_preservation=True, num_class_images=2)
    outcome = train_lora(base, crops, config)
    assert outcome.steps == 20 and outcome.chosen_step in (10, 20)
    assert np.isfinite(outcome.final_loss)
    path = tmp_path / "sdxl-lora.safetensors"
    path.write_bytes(outcome.adapter)
    pipe = StableDiffusionXLPipeline.from_pretrained(base)
    pipe.set_progress_bar_config(disable=True)
    before = _render(pipe, outcome.instance_prompt)
    pipe.load_lora_weights(str(path), adapter_name="trained_order_adapter_xl")
    after = _render(pipe, outcome.instance_prompt)
    assert np.abs(after - before).mean() > 1e-3
