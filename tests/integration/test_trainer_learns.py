"""The LoRA learns this person, not just "faces".

Tiny SD1.5-shaped model at 64 px, real photos. A real base model already knows what a
portrait looks like; the tiny one is random, so it first gets a short full fine-tune on
portraits of other people (Biden and 28 members of Congress, "a photo of a man") and
becomes the base. Then: train the LoRA on four photos of Obama (none of them an official
portrait) and measure the denoising loss with identical noise and timesteps
- on Obama's two held-out official portraits (Congressional Bioguide), and
- on ten official portraits of other members of Congress (same photographer's format),
before and after training, with the instance prompt. Neither group was seen in the base
fine-tune. Because the held-out photos share
their format with the other people's, a larger drop on them than on the others can only
come from the person.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch

from models.tiny_diffusion import build
from services.trainer.dataset import encode_latents
from services.trainer.lora_training import (
    DiffusionModels,
    TrainConfig,
    denoising_loss,
    train_lora,
)
from services.trainer.preprocess import CropGeometry, Preprocessor

pytestmark = pytest.mark.integration

TRAIN = [
    "obama-2009-congress.jpg",
    "obama-2010-blue-room.jpg",
    "obama-2012-portrait.jpg",
    "obama-briefing-room.jpg",
]
HELD_OUT = ["obama-president-bioguide.jpg", "obama-senate-bioguide.jpg"]
N_OTHERS = 10


def _portrait_base(base: Path, crops: list, out: Path) -> Path:
    """Full fine-tune of the tiny UNet on generic portraits: the stand-in for a real base
    model's knowledge of faces."""
    models = DiffusionModels(base, torch.device("cpu"), torch.float32)
    unet = models.unet
    unet.requires_grad_(True)
    unet.train()
    images = [c.image for c in crops] + [c.image[:, ::-1].copy() for c in crops]
    cache = encode_latents(models.vae, images)
    cond = models.encode_prompts(["a photo of a man"])
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, len(cache), (8,), generator=gen)
        lat = cache.sample(idx, gen)
        noise = torch.randn(lat.shape, generator=gen)
        t = torch.randint(0, 1000, (8,), generator=gen)
        pred = models.predict(models.noise_scheduler.add_noise(lat, noise, t), t, cond.take(8))
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    shutil.copytree(base, out)
    unet.save_pretrained(out / "unet")
    return out


def _crops(pre: Preprocessor, paths: list[Path]) -> list:
    result = pre.run([(p.name, p.read_bytes()) for p in paths])
    assert not result.rejected, result.summary()
    return result.crops


def _losses(base: Path, adapter: bytes | None, groups: dict[str, list], prompt: str) -> dict:
    from safetensors.torch import load

    models = DiffusionModels(base, torch.device("cpu"), torch.float32)
    if adapter is not None:
        models.pipeline().load_lora_weights(load(adapter), adapter_name="trained_subject_lora")
    cond = models.encode_prompts([prompt])
    out = {}
    for name, crops in groups.items():
        latents = encode_latents(models.vae, [c.image for c in crops]).mean
        # Many timesteps and two noise draws per crop: the comparison is about the model,
        # not about one lucky draw.
        out[name] = sum(
            denoising_loss(models, latents, cond, seed=s, quantiles=[i / 20 for i in range(1, 20)])
            for s in (11, 12)
        )
    return out


def test_lora_learns_the_subject_more_than_other_faces(
    models_dir: Path, faces_dir: Path, tmp_path: Path
) -> None:
    torch.set_num_threads(2)
    base = build("sd15", models_dir / "tiny-sd15")
    pre = Preprocessor.load(models_dir / "face", CropGeometry(64))
    train = _crops(pre, [faces_dir / "obama" / n for n in TRAIN])
    held = _crops(pre, [faces_dir / "obama" / n for n in HELD_OUT])
    all_others = sorted((faces_dir / "others").glob("*.jpg"))
    others = _crops(pre, all_others[:N_OTHERS])
    generic = pre.run(
        [
            (p.name, p.read_bytes())
            for p in [*all_others[N_OTHERS:], *(faces_dir / "biden").glob("*")]
        ]
    ).crops
    t0 = time.perf_counter()
    base = _portrait_base(base, generic, tmp_path / "portrait-base")
    print(f"portrait base from {len(generic)} photos in {time.perf_counter() - t0:.1f} s")

    config = TrainConfig(
        class_word="man",
        rank=16,
        # The tiny random model needs a larger step than a real SD checkpoint (1e-4).
        learning_rate=1e-3,
        steps=300,
        batch_size=4,
        validation_every=100,
        validation_inference_steps=4,
        validation_images=1,
        seed=3,
        device="cpu",
        # All four photos train: this test holds out its own two, and measures learning,
        # not the checkpoint choice (test_trainer_checkpoint_choice.py does that).
        holdout_photos=0,
    )
    groups = {"subject": held, "others": others}
    before = _losses(base, None, groups, config.instance_prompt)
    t0 = time.perf_counter()
    outcome = train_lora(base, train, config)
    print(f"trained {config.steps} steps in {time.perf_counter() - t0:.1f} s")
    after = _losses(base, outcome.adapter, groups, config.instance_prompt)

    drop = {k: (before[k] - after[k]) / before[k] for k in groups}
    print(f"before {before}\nafter {after}\nrelative drop {drop}")
    assert outcome.losses[-1] < outcome.losses[0]
    # The held-out photos of the subject improve, and more than other people's faces.
    assert drop["subject"] > 0
    assert drop["subject"] > 1.2 * drop["others"], drop
