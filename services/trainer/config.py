"""What one LoRA training run is made of: the one definition of the training options.

`TrainerSettings` (the service, env prefix HS_TRAINER_) inherits these fields, so every
option has one name, one type and one default; `for_order` turns the service's settings
plus an order's overrides into the run's config. Tests and the benches build a `TrainConfig`
directly.

Defaults follow what the open DreamBooth-LoRA trainers and headshot products use (diffusers'
train_dreambooth_lora examples, EasyPhoto, the Kohya guides): rank 16-32 on the UNet
attention projections, lr 1e-4 with AdamW, about 100 steps per photo capped at 1500, the
instance prompt "a photo of <rare token> <class>", best checkpoint by likeness.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from services.trainer.dataset import caption

if TYPE_CHECKING:
    from services.trainer.preprocess import Crop

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# Knobs that change how a run executes, not what it learns: a checkpoint made under other
# values of these is still resumed.
RUNTIME_FIELDS = frozenset(
    {"progress_interval_s", "device", "mixed_precision", "oom_retries", "checkpoint_every"}
)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 autocast on a GPU that supports it, fp16 on older GPUs, fp32 on CPU.
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    # auto: on for a GPU under 40 GiB (it costs 1.6-2.5x step time: bench/RESULTS.md),
    # off on bigger GPUs and on CPU.
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"

    # Captions.
    instance_token: str = "ohwx"
    # person | man | woman; the order's subject class wins when it names one.
    class_word: Literal["person", "man", "woman"] = "person"
    flip_augment: bool = True

    # LoRA.
    rank: int = Field(16, ge=1, le=256)
    # 0: equal to rank (scale 1).
    alpha: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = 0.0
    train_text_encoder: bool = False
    text_encoder_rank: int = 8
    text_encoder_lr: float = 5e-5

    # Optimisation.
    learning_rate: float = 1e-4
    # 0: steps_per_photo x photos, within [min_steps, max_steps].
    steps: int = Field(0, ge=0)
    steps_per_photo: int = 100
    min_steps: int = 100
    max_steps: int = 1500
    batch_size: int = Field(1, ge=1)
    grad_accumulation: int = Field(1, ge=1)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    # Min-SNR loss weighting (Hang et al. 2023); 0 = plain MSE.
    snr_gamma: float = 0.0
    seed: int = 0

    # Prior preservation (DreamBooth): class images rendered by the base model.
    prior_preservation: bool = False
    num_class_images: int = 50
    prior_loss_weight: float = 1.0

    # Checkpoint choice. Every `validation_every` steps (0: five times over the run) the
    # denoising loss on data the LoRA does not train on is measured (fixed noise and
    # timesteps), and, with a likeness scorer, `validation_images` renders of the instance
    # prompt are scored against the selfies (EasyPhoto). Likeness decides when the renders
    # hold faces; otherwise the held-out loss decides.
    validation_every: int = 0
    validation_images: int = 4
    validation_inference_steps: int = 20
    validation_guidance: float = 5.0
    # Selfies kept out of training for the held-out loss, taken only while at least
    # `min_train_photos` remain to train on. When none can be spared, two of the prior-class
    # images are held out instead (with prior preservation), else the loss is measured on
    # the training crops and the metadata says that it cannot see over-fitting.
    holdout_photos: int = Field(1, ge=0)
    min_train_photos: int = Field(3, ge=1)
    holdout_class_images: int = Field(2, ge=0)

    # Long jobs.
    # Training state to the blob store every this many steps (0: at each validation).
    checkpoint_every: int = 0
    progress_interval_s: float = 2.0
    # On GPU out-of-memory: one retry with half the batch and twice the accumulation.
    oom_retries: int = 1

    @property
    def instance_prompt(self) -> str:
        return caption(self.instance_token, self.class_word)

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha or self.rank)

    def steps_for(self, photos: int) -> int:
        """The run's step count: `steps`, or the per-photo rule when it is 0."""
        if self.steps:
            return self.steps
        auto = self.steps_per_photo * max(photos, 1)
        return min(self.max_steps, max(self.min_steps, auto))

    def validation_interval(self) -> int:
        return self.validation_every or max(1, math.ceil(self.steps / 5))

    def checkpoint_interval(self) -> int:
        return self.checkpoint_every or self.validation_interval()

    def fingerprint(self, crops: Sequence[Crop]) -> str:
        """What a checkpoint must match to be resumed: the training inputs, not the
        runtime knobs (progress interval, device, batch split after an OOM)."""
        keep = self.model_dump(mode="json", exclude=set(RUNTIME_FIELDS))
        h = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
        for c in crops:
            h.update(c.name.encode())
            h.update(np.ascontiguousarray(c.image).tobytes())
        return h.hexdigest()[:32]

    def for_order(
        self,
        *,
        photos: int,
        class_word: str | None = None,
        rank: int = 0,
        steps: int = 0,
        learning_rate: float = 0.0,
        train_text_encoder: bool | None = None,
    ) -> TrainConfig:
        """This config (or the service settings that extend it) with the order's non-zero
        TrainingConfig fields applied and the step count fixed."""
        fields = self.model_dump(include=set(TrainConfig.model_fields))
        update: dict[str, Any] = {"steps": steps or self.steps_for(photos)}
        if class_word:
            update["class_word"] = class_word
        if rank:
            # An order's rank comes without an alpha: scale 1.
            update |= {"rank": rank, "alpha": 0.0}
        if learning_rate:
            update["learning_rate"] = learning_rate
        if train_text_encoder is not None:
            update["train_text_encoder"] = train_text_encoder
        return TrainConfig.model_validate(fields | update)
