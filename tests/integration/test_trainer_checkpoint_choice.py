"""The exported checkpoint is chosen on a selfie the LoRA never trained on.

Training is pushed past its best point on purpose: the learning rate ramps up to a value
that wrecks the model (0.1), so the held-out loss first falls and then rises again. The
trainer must export the earlier checkpoint with the lowest held-out loss, say so in the
adapter's metadata, and report the training loss that led to that checkpoint, not to the
last step. The exported file itself is checked: loaded into a fresh pipeline, it gives the
held-out loss recorded for the chosen step.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load

from models.tiny_diffusion import build
from services.trainer.config import TrainConfig
from services.trainer.dataset import encode_latents
from services.trainer.lora_training import (
    FINAL_LOSS_WINDOW,
    DiffusionModels,
    adapter_metadata,
    denoising_loss,
    split_holdout,
    train_lora,
)
from services.trainer.preprocess import CropGeometry, Preprocessor

pytestmark = pytest.mark.integration

# LoRA on the convolutions too: on the tiny random UNet the attention projections alone
# barely move the loss, so there would be no best point to train past.
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "conv_in", "conv_out")


@pytest.fixture(scope="module")
def crops(models_dir: Path, faces_dir: Path) -> list:
    pre = Preprocessor.load(models_dir / "face", CropGeometry(64))
    photos = sorted((faces_dir / "obama").glob("*.jpg"))[:4]
    result = pre.run([(p.name, p.read_bytes()) for p in photos])
    assert len(result.crops) == 4, result.summary()
    return result.crops


def test_training_past_the_best_point_exports_the_earlier_checkpoint(
    models_dir: Path, crops: list
) -> None:
    # One thread: on a busy shared machine two threads spend their time waiting for each
    # other.
    torch.set_num_threads(1)
    base = build("sd15", models_dir / "tiny-sd15")
    config = TrainConfig(
        class_word="man",
        rank=16,
        targets=TARGETS,
        learning_rate=0.1,
        # The LR ramps from 0.1/48 to 0.1 over the whole run: fine at first, ruinous later.
        warmup_steps=48,
        steps=48,
        batch_size=2,
        flip_augment=False,
        validation_every=6,
        device="cpu",
    )
    train, held = split_holdout(crops, config)
    assert len(train) == 3 and len(held) == 1

    outcome = train_lora(base, crops, config)

    losses = {int(v["step"]): v["validation_loss"] for v in outcome.validations}
    best = min(losses, key=lambda s: losses[s])
    # The run went past its best point (else the test proves nothing) ...
    assert best < config.steps and losses[config.steps] > 1.1 * losses[best], losses
    # ... and the earlier, better checkpoint is the one exported.
    assert outcome.chosen_step == best
    assert outcome.metric == "heldout_loss"

    meta = adapter_metadata(outcome.adapter)
    assert meta["headshots.chosen_step"] == str(best)
    assert meta["headshots.metric"] == "heldout_loss"
    assert meta["headshots.validation_set"] == "heldout_selfies"
    assert meta["headshots.validation_names"] == held[0].name
    assert held[0].name not in {c.name for c in train}
    reason = meta["headshots.choice"]
    assert "held-out selfie" in reason and f"step {best} of 48" in reason, reason
    assert float(meta["headshots.validation_loss"]) == pytest.approx(losses[best], rel=1e-5)
    table = json.loads(meta["headshots.validations"])
    assert [int(r["step"]) for r in table] == sorted(losses)

    # final_loss belongs to the exported checkpoint: the steps that led up to it.
    window = outcome.losses[max(0, best - FINAL_LOSS_WINDOW) : best]
    assert outcome.final_loss == pytest.approx(float(np.mean(window)), rel=1e-6)
    assert float(meta["headshots.final_loss"]) == pytest.approx(outcome.final_loss, rel=1e-5)
    last = float(np.mean(outcome.losses[-FINAL_LOSS_WINDOW:]))
    assert abs(outcome.final_loss - last) > 1e-3

    # The file holds the chosen checkpoint: its held-out loss, measured afresh, is the one
    # recorded at the chosen step, not the last step's.
    models = DiffusionModels(base, torch.device("cpu"), torch.float32)
    models.pipeline().load_lora_weights(load(outcome.adapter), adapter_name="exported")
    latents = encode_latents(models.vae, [held[0].image]).mean
    cond = models.encode_prompts([config.instance_prompt])
    again = denoising_loss(models, latents, cond, seed=config.seed + 4242)
    # Within 1 %: a fresh process may sum in another order (thread count), not another step.
    assert again == pytest.approx(losses[best], rel=1e-2)
    assert abs(again - losses[config.steps]) > 0.05 * losses[best]


def test_holdout_takes_a_selfie_only_when_enough_remain(crops: list) -> None:
    config = TrainConfig(holdout_photos=1, min_train_photos=3)
    train, held = split_holdout(crops, config)
    assert [c.name for c in held] == [sorted(c.name for c in crops)[-1]]
    assert len(train) == 3
    # With three photos nothing can be spared: all train, nothing is held out.
    train, held = split_holdout(crops[:3], config)
    assert len(train) == 3 and held == []
    train, held = split_holdout(crops, TrainConfig(holdout_photos=2, min_train_photos=3))
    assert len(held) == 1
