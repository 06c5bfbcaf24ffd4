"""Trainer settings (env prefix HS_TRAINER_).

Defaults follow what the open DreamBooth-LoRA trainers and headshot products use (diffusers'
train_dreambooth_lora examples, EasyPhoto, the Kohya guides): rank 16-32 on the UNet
attention projections, lr 1e-4 with AdamW, about 100 steps per photo capped at 1500, the
instance prompt "a photo of <rare token> <class>", best checkpoint by likeness.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


class TrainerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HS_TRAINER_", extra="ignore")

    # A local diffusers folder (SD 1.5 or SDXL class). Empty: `<models_dir>/tiny-sd15`.
    base_model: Path | None = None
    # Recorded in the training result; empty: the base model folder's name.
    model_id: str = ""
    # Face stack (detector + identity) folder; empty: `<models_dir>/face`.
    face_models_dir: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 autocast on a GPU that supports it, fp16 on older GPUs, fp32 on CPU.
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    # auto: on for a GPU under 40 GiB (it costs 1.6-2.5x step time: bench/RESULTS.md),
    # off on bigger GPUs and on CPU.
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"
    # torch threads on CPU; 0 leaves torch's default.
    cpu_threads: int = 0

    # Preprocessing. 0: the model's native resolution (UNet sample size x VAE factor).
    resolution: int = 0
    # Crop geometry as fractions of the crop side (head-and-shoulders, eyes level).
    eye_line: float = 0.40
    # Interocular distance / crop side for a frontal face ("head and shoulders").
    face_scale: float = 0.17
    # A photo whose face would be enlarged more than this to reach the crop is dropped.
    max_upscale: float = 4.0
    # Share of the crop allowed to fall outside the photo before it is dropped (the rest is
    # filled by replicating the border).
    max_outside: float = 0.30
    flip_augment: bool = True
    min_photos: int = 3

    # Captions.
    instance_token: str = "ohwx"
    # person | man | woman; the order's subject class wins when it names one.
    class_word: Literal["person", "man", "woman"] = "person"

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
    steps: int = 0
    steps_per_photo: int = 100
    min_steps: int = 100
    max_steps: int = 1500
    batch_size: int = 1
    grad_accumulation: int = 1
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

    # Checkpoint choice (EasyPhoto): every `validation_every` steps render
    # `validation_images` with the instance prompt and score likeness to the selfies.
    # 0: five validations over the run.
    validation_every: int = 0
    validation_images: int = 4
    validation_inference_steps: int = 20
    validation_guidance: float = 5.0

    # Long jobs.
    # Training state to the blob store every this many steps (0: at each validation).
    checkpoint_every: int = 0
    progress_interval_s: float = 2.0
    ack_wait_s: float = 60.0
    max_deliver: int = 5
    # On GPU out-of-memory: one retry with half the batch and twice the accumulation.
    oom_retries: int = 1

    def base_model_path(self) -> Path:
        return self.base_model or (self.models_dir / "tiny-sd15")

    def face_models_path(self) -> Path:
        return self.face_models_dir or (self.models_dir / "face")

    def resolved_model_id(self) -> str:
        return self.model_id or self.base_model_path().resolve().name
