"""DreamBooth-LoRA training as a library (no NATS): crops in, a diffusers-format LoRA out.

    outcome = train_lora(base_model_path, crops, config,
                         on_progress=..., checkpoint_store=..., resume_from=state,
                         should_stop=lambda: ..., likeness=scorer)

What a step does (the recipe of diffusers' train_dreambooth_lora scripts):
- latents: drawn from each crop's cached VAE distribution (the VAE ran once per photo);
- noise and a uniform timestep in [0, T); the UNet (LoRA on its attention projections, base
  frozen) predicts the noise (or v) for the instance prompt "a photo of <token> <class>";
- MSE loss (optionally Min-SNR weighted), plus the prior-preservation loss on class images
  rendered by the base model when enabled; AdamW on the LoRA parameters only, constant or
  cosine LR with warm-up, gradient clipping, gradient accumulation;
- on a GPU: bf16 autocast (fp16 + gradient scaling where bf16 is missing), frozen weights
  stored in that dtype, LoRA weights in fp32, SDPA attention (diffusers' default processor),
  gradient checkpointing.
All randomness of step s comes from a generator seeded with (seed, s), so a run resumed from
a checkpoint draws exactly what the uninterrupted run would have drawn, and an OOM retry with
a smaller micro-batch computes the same step.

Checkpoint choice: one selfie (`holdout_photos`) is kept out of training when enough remain
(else two prior-class images, else nothing: see `TrainConfig`). Every `validation_every`
steps the denoising loss on that held-out data (fixed noise and timesteps) is measured and,
with a likeness scorer, a few images are rendered and scored against the selfies; the best
checkpoint is kept (EasyPhoto), by likeness when the renders contain faces, else by the
held-out loss. The adapter's metadata says which step was exported, why, on what data, and
the training loss that led to it (`final_loss`), not the loss of the last step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from services.trainer.checkpointing import CheckpointStore, TrainingState
from services.trainer.config import TrainConfig
from services.trainer.dataset import (
    LatentCache,
    augmented,
    class_prompt,
    encode_latents,
)
from services.trainer.preprocess import Crop

if TYPE_CHECKING:
    from services.trainer.likeness import LikenessScorer

log = logging.getLogger(__name__)

TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
ADAPTER_NAME = "headshots_trainer_lora"
# Validation loss: these timestep quantiles for every held-out latent, fixed noise. Ten,
# because one or two held-out photos are few samples of the loss.
VALIDATION_T = tuple((i + 0.5) / 10 for i in range(10))


class TrainingFailed(Exception):
    """The job cannot be trained (bad input, out of memory after the retry)."""


class TrainingInterrupted(Exception):
    """`should_stop` asked to stop; the state was checkpointed at `step`."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training stopped at step {step} (checkpoint saved)")
        self.step = step


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    loss: float
    eta_seconds: float
    phase: str = "training"


@dataclass
class TrainingOutcome:
    adapter: bytes  # .safetensors, diffusers LoRA format
    rank: int
    steps: int
    chosen_step: int
    # Mean training loss over the steps that led to the exported checkpoint.
    final_loss: float
    likeness: float  # nan when checkpoints were chosen by validation loss
    metric: str  # "likeness" | "heldout_loss" | "training_crop_loss"
    instance_prompt: str
    validations: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    seconds_per_step: float = 0.0
    batch_size: int = 1
    grad_accumulation: int = 1
    losses: list[float] = field(default_factory=list)
    # Why the exported checkpoint was chosen, on what data, and its loss there.
    reason: str = ""
    validation_set: str = ""
    validation_loss: float = float("nan")


# ------------------------------------------------------------------------------ models


@dataclass
class Conditioning:
    hidden: torch.Tensor  # B x L x D
    pooled: torch.Tensor | None = None  # SDXL: B x D2
    time_ids: torch.Tensor | None = None  # SDXL: B x 6

    def take(self, n: int) -> Conditioning:
        """The same conditioning for a batch of n."""

        def rep(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[:1].expand(n, *t.shape[1:])

        return Conditioning(rep(self.hidden), rep(self.pooled), rep(self.time_ids))  # type: ignore[arg-type]

    def cat(self, other: Conditioning) -> Conditioning:
        def c(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
            return None if a is None or b is None else torch.cat([a, b])

        return Conditioning(
            c(self.hidden, other.hidden),
            c(self.pooled, other.pooled),
            c(self.time_ids, other.time_ids),
        )  # type: ignore[arg-type]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for fp32."""
    if device.type != "cuda" or name == "no":
        return None
    if name == "bf16" or (name == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


class DiffusionModels:
    """The base pipeline's parts, loaded from a local diffusers folder (SD1.5 or SDXL)."""

    def __init__(self, path: Path, device: torch.device, weight_dtype: torch.dtype) -> None:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        path = Path(path)
        index_file = path / "model_index.json"
        if not index_file.is_file():
            raise TrainingFailed(
                f"base model {path} is not a diffusers folder (no model_index.json)"
            )
        index = json.loads(index_file.read_text())
        self.path = path
        self.device = device
        self.weight_dtype = weight_dtype
        self.is_xl = (
            "text_encoder_2" in index and index.get("text_encoder_2", [None])[0] is not None
        )
        self.pipeline_class = index.get("_class_name", "StableDiffusionPipeline")
        self.tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
        self.text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder")
        self.tokenizer_2 = self.text_encoder_2 = None
        if self.is_xl:
            self.tokenizer_2 = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2")
            self.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
                path, subfolder="text_encoder_2"
            )
        # The VAE stays fp32: it runs once per photo, and SD/SDXL VAEs overflow in fp16.
        self.vae = AutoencoderKL.from_pretrained(path, subfolder="vae").to(device)
        self.unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet")
        self.scheduler_config = dict(
            DDPMScheduler.load_config(path, subfolder="scheduler")  # type: ignore[arg-type]
        )
        self.noise_scheduler = DDPMScheduler.from_config(self.scheduler_config)
        for m in self.frozen():
            m.requires_grad_(False)
            m.to(device=device)
            if weight_dtype != torch.float32:
                m.to(dtype=weight_dtype)
        self.vae.requires_grad_(False)
        self.vae.eval()
        self.resolution = int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def text_encoders(self) -> list[torch.nn.Module]:
        return [m for m in (self.text_encoder, self.text_encoder_2) if m is not None]

    def frozen(self) -> list[torch.nn.Module]:
        return [self.unet, *self.text_encoders()]

    def tokens(self, tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
        return tokenizer(
            list(prompts),
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """SD1.5: the text encoder's last hidden state. SDXL: both encoders' penultimate
        hidden states concatenated, the second's pooled projection, and the six
        size/crop numbers (original = target = resolution, no crop: aligned crops)."""
        ids = self.tokens(self.tokenizer, prompts)
        if not self.is_xl:
            return Conditioning(self.text_encoder(ids)[0])
        assert self.text_encoder_2 is not None and self.tokenizer_2 is not None
        h1 = self.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        out2 = self.text_encoder_2(
            self.tokens(self.tokenizer_2, prompts), output_hidden_states=True
        )
        hidden = torch.cat([h1, out2.hidden_states[-2]], dim=-1)
        r = self.resolution
        time_ids = torch.tensor([[r, r, 0, 0, r, r]] * len(prompts), dtype=hidden.dtype)
        return Conditioning(hidden, out2.text_embeds, time_ids.to(self.device))

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        extra = {}
        if cond.pooled is not None:
            extra["added_cond_kwargs"] = {"text_embeds": cond.pooled, "time_ids": cond.time_ids}
        return self.unet(noisy, t, encoder_hidden_states=cond.hidden, **extra).sample

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, t)
        raise TrainingFailed(f"unsupported prediction type {kind!r}")

    def pipeline(self) -> Any:
        """An inference pipeline over the live (LoRA-carrying) modules."""
        from diffusers import (
            DPMSolverMultistepScheduler,
            StableDiffusionPipeline,
            StableDiffusionXLPipeline,
        )

        scheduler = DPMSolverMultistepScheduler.from_config(self.scheduler_config)
        if self.is_xl:
            return StableDiffusionXLPipeline(
                vae=self.vae,
                text_encoder=self.text_encoder,
                text_encoder_2=self.text_encoder_2,
                tokenizer=self.tokenizer,
                tokenizer_2=self.tokenizer_2,
                unet=self.unet,
                scheduler=scheduler,
            )
        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """The generator for one training step (same draws on resume as without a stop)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + salt) % (2**63))


@torch.no_grad()
def denoising_loss(
    models: DiffusionModels,
    latents: torch.Tensor,
    cond: Conditioning,
    *,
    seed: int,
    quantiles: Sequence[float] = VALIDATION_T,
    autocast: torch.dtype | None = None,
) -> float:
    """Mean MSE of the model's prediction over `latents` x `quantiles` timesteps with noise
    drawn from `seed`: identical noise and timesteps for any two calls with equal shapes."""
    gen = torch.Generator().manual_seed(seed)
    n = latents.shape[0]
    total, count = 0.0, 0
    steps = models.noise_scheduler.config.num_train_timesteps
    for q in quantiles:
        t = torch.full((n,), int(q * (steps - 1)), dtype=torch.long)
        noise = torch.randn(latents.shape, generator=gen)
        lat = latents.to(models.device)
        noise_d = noise.to(models.device)
        t_d = t.to(models.device)
        noisy = models.noise_scheduler.add_noise(lat, noise_d, t_d)
        with _autocast(models.device, autocast):
            pred = models.predict(noisy.to(_input_dtype(models, autocast)), t_d, cond.take(n))
        target = models.target(lat, noise_d, t_d)
        total += float(F.mse_loss(pred.float(), target.float(), reduction="sum"))
        count += target.numel()
    return total / count


def _input_dtype(models: DiffusionModels, autocast: torch.dtype | None) -> torch.dtype:
    return torch.float32 if autocast is not None else models.weight_dtype


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ------------------------------------------------------------------------------ LoRA


def add_lora(models: DiffusionModels, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Attach the LoRA(s) and return the trainable parameters (fp32)."""
    from peft import LoraConfig

    torch.manual_seed(config.seed)
    models.unet.add_adapter(
        LoraConfig(
            r=config.rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.dropout,
            init_lora_weights="gaussian",
            target_modules=list(config.targets),
        ),
        adapter_name=ADAPTER_NAME,
    )
    if config.train_text_encoder:
        for te in models.text_encoders():
            te.add_adapter(
                LoraConfig(
                    r=config.text_encoder_rank,
                    lora_alpha=config.text_encoder_rank,
                    lora_dropout=config.dropout,
                    init_lora_weights="gaussian",
                    target_modules=list(TEXT_TARGETS),
                ),
                adapter_name=ADAPTER_NAME,
            )
    params = []
    for _, p in trainable(models):
        p.data = p.data.float()
        params.append(p)
    if not params:
        raise TrainingFailed(f"LoRA targets {config.targets} matched no layer of the UNet")
    return params


def trainable(models: DiffusionModels) -> list[tuple[str, torch.nn.Parameter]]:
    out = []
    for prefix, module in _prefixed(models):
        out += [(f"{prefix}.{n}", p) for n, p in module.named_parameters() if p.requires_grad]
    return out


def _prefixed(models: DiffusionModels) -> list[tuple[str, torch.nn.Module]]:
    mods: list[tuple[str, torch.nn.Module]] = [("unet", models.unet)]
    mods.append(("text_encoder", models.text_encoder))
    if models.text_encoder_2 is not None:
        mods.append(("text_encoder_2", models.text_encoder_2))
    return mods


def lora_weights(models: DiffusionModels) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().cpu().clone() for n, p in trainable(models)}


def load_lora_weights_into(models: DiffusionModels, weights: dict[str, torch.Tensor]) -> None:
    params = dict(trainable(models))
    missing = set(params) - set(weights)
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} LoRA parameters")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n].to(p.device, p.dtype))


def export_lora(models: DiffusionModels, config: TrainConfig, metadata: dict[str, str]) -> bytes:
    """The live LoRA as diffusers-format .safetensors (`unet.` / `text_encoder.` prefixes,
    `lora.down` / `lora.up` keys: what `load_lora_weights` and the common UIs read). The
    alpha/rank scale is folded into the up weights, so a reader that assumes alpha = rank
    (no alpha keys) gets exactly the trained adapter."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict
    from safetensors.torch import save

    out: dict[str, torch.Tensor] = {}
    for prefix, module in _prefixed(models):
        if not getattr(module, "peft_config", None):
            continue
        sd = get_peft_model_state_dict(module, adapter_name=ADAPTER_NAME)
        cfg = module.peft_config[ADAPTER_NAME]
        scale = float(cfg.lora_alpha) / float(cfg.r)
        for k, v in convert_state_dict_to_diffusers(sd).items():
            t = v.detach().float().cpu()
            if scale != 1.0 and ("lora.up" in k or "lora_B" in k or "lora_linear_layer.up" in k):
                t = t * scale
            out[f"{prefix}.{k}"] = t.contiguous()
    meta = {"format": "pt", "headshots.rank": str(config.rank), **metadata}
    return save(out, metadata=meta)


def adapter_metadata(data: bytes) -> dict[str, str]:
    """The metadata the trainer wrote into an adapter file."""
    # The safetensors header: 8 bytes little-endian length, then JSON with __metadata__.
    if len(data) < 8:
        raise ValueError("not a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("not a safetensors file")
    header = json.loads(data[8 : 8 + n])
    return dict(header.get("__metadata__") or {})


# ------------------------------------------------------------------------------ training


def _lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    warm = max(0, config.warmup_steps)
    total = max(1, config.steps)

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if config.lr_schedule == "cosine":
            progress = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return f


@dataclass
class _Data:
    instance: LatentCache
    instance_cond: Conditioning
    class_latents: LatentCache | None
    class_cond: Conditioning | None
    # The checkpoint-choice loss is measured on these (latent means) with this prompt.
    validation_latents: torch.Tensor
    validation_cond: Conditioning
    # "heldout_selfies" | "heldout_class_images" | "training_crops"
    validation_set: str
    validation_names: list[str]


def split_holdout(crops: Sequence[Crop], config: TrainConfig) -> tuple[list[Crop], list[Crop]]:
    """(training crops, held-out crops). The held-out selfies are the last by name (any
    fixed rule will do: the split must be the same on every delivery of the job), taken
    only while `min_train_photos` remain."""
    spare = max(0, len(crops) - config.min_train_photos)
    n = min(config.holdout_photos, spare)
    if n == 0:
        return list(crops), []
    held = set(sorted(c.name for c in crops)[-n:])
    return [c for c in crops if c.name not in held], [c for c in crops if c.name in held]


def _render_class_images(
    models: DiffusionModels, config: TrainConfig, autocast: torch.dtype | None
) -> list[np.ndarray]:
    pipe = models.pipeline()
    pipe.set_progress_bar_config(disable=True)
    images: list[np.ndarray] = []
    prompt = class_prompt(config.class_word)
    batch = 4
    for i in range(0, config.num_class_images, batch):
        n = min(batch, config.num_class_images - i)
        gens = [torch.Generator().manual_seed(10_000 + config.seed + i + j) for j in range(n)]
        with torch.no_grad(), _autocast(models.device, autocast):
            out = pipe(
                [prompt] * n,
                num_inference_steps=config.validation_inference_steps,
                guidance_scale=config.validation_guidance,
                height=models.resolution,
                width=models.resolution,
                generator=gens,
                output_type="np",
            ).images
        images += [(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in out]
    return images


def _prepare_data(
    models: DiffusionModels,
    crops: Sequence[Crop],
    heldout: Sequence[Crop],
    config: TrainConfig,
    autocast: torch.dtype | None,
) -> _Data:
    examples = augmented(crops, config.flip_augment)
    for c in [*examples, *heldout]:
        if c.image.shape[:2] != (models.resolution, models.resolution):
            raise TrainingFailed(
                f"crop {c.name} is {c.image.shape[1]}x{c.image.shape[0]}; "
                f"the model trains at {models.resolution}x{models.resolution}"
            )
    instance = encode_latents(models.vae, [c.image for c in examples], device=models.device)
    with torch.no_grad():
        instance_cond = models.encode_prompts([config.instance_prompt])
    class_latents = class_cond = None
    if config.prior_preservation and config.num_class_images > 0:
        images = _render_class_images(models, config, autocast)
        class_latents = encode_latents(models.vae, images, device=models.device)
        with torch.no_grad():
            class_cond = models.encode_prompts([class_prompt(config.class_word)])
    # The checkpoint-choice loss, at the latents' means: held-out selfies when some could be
    # spared; else held-out class images (they show the LoRA forgetting the class, the
    # failure prior preservation guards against); else the training crops themselves,
    # which cannot show over-fitting (the metadata says so).
    if heldout:
        val = encode_latents(models.vae, [c.image for c in heldout], device=models.device)
        return _Data(
            instance,
            instance_cond,
            class_latents,
            class_cond,
            val.mean,
            instance_cond,
            "heldout_selfies",
            [c.name for c in heldout],
        )
    n_class = min(config.holdout_class_images, len(class_latents) - 1) if class_latents else 0
    if class_latents is not None and class_cond is not None and n_class > 0:
        keep = len(class_latents) - n_class
        held_mean = class_latents.mean[keep:]
        class_latents = LatentCache(class_latents.mean[:keep], class_latents.std[:keep])
        names = [f"class-image-{i}" for i in range(keep, keep + n_class)]
        return _Data(
            instance,
            instance_cond,
            class_latents,
            class_cond,
            held_mean,
            class_cond,
            "heldout_class_images",
            names,
        )
    val = encode_latents(models.vae, [c.image for c in crops], device=models.device).mean
    return _Data(
        instance,
        instance_cond,
        class_latents,
        class_cond,
        val,
        instance_cond,
        "training_crops",
        [c.name for c in crops],
    )


# Gradient checkpointing costs 1.6-2.5x step time (bench/RESULTS.md, H200); it pays only
# where memory is short: SDXL at 1024² batch 4 needs 34 GiB without it, 8 GiB with it.
CHECKPOINTING_BELOW_GIB = 40.0


def _small_gpu(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    return total < CHECKPOINTING_BELOW_GIB


def _set_checkpointing(
    models: DiffusionModels, config: TrainConfig, on: bool | None = None
) -> bool:
    if on is None:
        on = config.gradient_checkpointing == "on" or (
            config.gradient_checkpointing == "auto" and _small_gpu(models.device)
        )
    if on:
        models.unet.enable_gradient_checkpointing()
        for te in models.text_encoders():
            if config.train_text_encoder:
                te.gradient_checkpointing_enable()
    else:
        models.unet.disable_gradient_checkpointing()
    return on


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class _Trainer:
    def __init__(
        self,
        models: DiffusionModels,
        data: _Data,
        config: TrainConfig,
        params: list[torch.nn.Parameter],
        autocast: torch.dtype | None,
    ) -> None:
        self.models = models
        self.data = data
        self.config = config
        self.autocast = autocast
        unet_params = [p for n, p in trainable(models) if n.startswith("unet.")]
        te_params = [p for n, p in trainable(models) if not n.startswith("unet.")]
        groups: list[dict[str, Any]] = [{"params": unet_params, "lr": config.learning_rate}]
        if te_params:
            groups.append({"params": te_params, "lr": config.text_encoder_lr})
        self.params = params
        self.optimizer = torch.optim.AdamW(
            groups, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, [_lr_lambda(config)] * len(groups)
        )
        self.scaler = (
            torch.amp.GradScaler("cuda") if autocast == torch.float16 else None  # type: ignore[attr-defined]
        )
        self.batch_size = config.batch_size
        self.grad_accumulation = config.grad_accumulation

    def _cond(self, n: int) -> Conditioning:
        if self.config.train_text_encoder:
            with _autocast(self.models.device, self.autocast):
                cond = self.models.encode_prompts([self.config.instance_prompt])
            return cond.take(n)
        return self.data.instance_cond.take(n)

    def step(self, step: int) -> float:
        """One optimiser step (all micro-batches). Same draws for any micro-batch split."""
        cfg, m, dev = self.config, self.models, self.models.device
        total = self.batch_size * self.grad_accumulation
        gen = step_generator(cfg.seed, step)
        idx = torch.randint(0, len(self.data.instance), (total,), generator=gen)
        lat = self.data.instance.sample(idx, gen)
        noise = torch.randn(lat.shape, generator=gen)
        t = torch.randint(0, m.noise_scheduler.config.num_train_timesteps, (total,), generator=gen)
        prior = None
        if self.data.class_latents is not None and self.data.class_cond is not None:
            cidx = torch.randint(0, len(self.data.class_latents), (total,), generator=gen)
            clat = self.data.class_latents.sample(cidx, gen)
            cnoise = torch.randn(clat.shape, generator=gen)
            ct = torch.randint(
                0, m.noise_scheduler.config.num_train_timesteps, (total,), generator=gen
            )
            prior = (clat, cnoise, ct)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for start in range(0, total, self.batch_size):
            sl = slice(start, start + self.batch_size)
            n = lat[sl].shape[0]
            lat_b, noise_b, t_b = lat[sl].to(dev), noise[sl].to(dev), t[sl].to(dev)
            cond = self._cond(n)
            if prior is not None:
                assert self.data.class_cond is not None
                lat_b = torch.cat([lat_b, prior[0][sl].to(dev)])
                noise_b = torch.cat([noise_b, prior[1][sl].to(dev)])
                t_b = torch.cat([t_b, prior[2][sl].to(dev)])
                cond = cond.cat(self.data.class_cond.take(n))
            noisy = m.noise_scheduler.add_noise(lat_b, noise_b, t_b)
            with _autocast(dev, self.autocast):
                pred = m.predict(noisy.to(_input_dtype(m, self.autocast)), t_b, cond)
            target = m.target(lat_b, noise_b, t_b)
            per = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
            if cfg.snr_gamma > 0:
                from diffusers.training_utils import compute_snr

                snr = compute_snr(m.noise_scheduler, t_b)
                w = torch.clamp(snr, max=cfg.snr_gamma) / snr
                if m.noise_scheduler.config.prediction_type == "v_prediction":
                    w = torch.clamp(snr, max=cfg.snr_gamma) / (snr + 1)
                per = per * w
            loss = per[:n].mean()
            if prior is not None:
                loss = loss + cfg.prior_loss_weight * per[n:].mean()
            loss = loss / self.grad_accumulation
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            loss_sum += float(loss.detach())
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.lr_scheduler.step()
        return loss_sum

    def shrink_for_oom(self) -> str:
        """Half the micro-batch (twice the accumulation), or gradient checkpointing when
        the micro-batch is already 1: the effective batch and the draws stay the same."""
        self.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self.batch_size > 1:
            self.grad_accumulation *= 2
            self.batch_size = math.ceil(self.batch_size / 2)
            return f"micro-batch {self.batch_size} x {self.grad_accumulation} accumulation"
        _set_checkpointing(self.models, self.config, True)
        return "gradient checkpointing"


def train_lora(
    base_model_path: Path | str,
    crops: Sequence[Crop],
    config: TrainConfig,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    checkpoint_store: CheckpointStore | None = None,
    resume_from: TrainingState | None = None,
    should_stop: Callable[[], bool] | None = None,
    likeness: LikenessScorer | None = None,
    metadata: dict[str, str] | None = None,
) -> TrainingOutcome:
    """Train the order's LoRA; see the module docstring. Raises TrainingInterrupted after
    checkpointing when `should_stop()` turns true, TrainingFailed when it cannot train."""
    started = time.perf_counter()
    if not crops:
        raise TrainingFailed("no usable photos to train on")
    config = config.model_copy(update={"steps": config.steps_for(len(crops))})
    if config.steps < 1:
        raise TrainingFailed(f"steps must be at least 1, got {config.steps}")
    device = resolve_device(config.device)
    autocast = resolve_precision(config.mixed_precision, device)
    weight_dtype = autocast or torch.float32
    models = DiffusionModels(Path(base_model_path), device, weight_dtype)
    fingerprint = config.fingerprint(crops)
    train_crops, heldout = split_holdout(crops, config)
    data = _prepare_data(models, train_crops, heldout, config, autocast)
    params = add_lora(models, config)
    _set_checkpointing(models, config)
    models.unet.train()
    trainer = _Trainer(models, data, config, params, autocast)

    state = TrainingState(
        step=0,
        total_steps=config.steps,
        lora={},
        optimizer={},
        lr_scheduler={},
        fingerprint=fingerprint,
        batch_size=config.batch_size,
        grad_accumulation=config.grad_accumulation,
    )
    resumed_from = 0
    if resume_from is not None:
        if resume_from.fingerprint != fingerprint or resume_from.total_steps != config.steps:
            log.warning("checkpoint was made for other inputs or settings; starting over")
        else:
            load_lora_weights_into(models, resume_from.lora)
            trainer.optimizer.load_state_dict(resume_from.optimizer)
            trainer.lr_scheduler.load_state_dict(resume_from.lr_scheduler)
            trainer.batch_size = resume_from.batch_size
            trainer.grad_accumulation = resume_from.grad_accumulation
            state = resume_from
            resumed_from = state.step
            log.info("resuming from step %d of %d", state.step, config.steps)

    def checkpoint() -> None:
        if checkpoint_store is None:
            return
        state.lora = lora_weights(models)
        state.optimizer = trainer.optimizer.state_dict()
        state.lr_scheduler = trainer.lr_scheduler.state_dict()
        state.batch_size = trainer.batch_size
        state.grad_accumulation = trainer.grad_accumulation
        checkpoint_store.save(state)

    val_every = config.validation_interval()

    def validate(step: int) -> None:
        models.unet.eval()
        val_loss = denoising_loss(
            models,
            data.validation_latents,
            data.validation_cond,
            seed=config.seed + 4242,
            autocast=autocast,
        )
        since = state.losses[-val_every:]
        record: dict[str, float] = {
            "step": step,
            "validation_loss": val_loss,
            "train_loss": float(np.mean(since)) if since else float("nan"),
        }
        if likeness is not None:
            images = render_validation(models, config, autocast)
            score = likeness.score(images)
            record.update(likeness=score.likeness, faces=score.faces_found)
            if score.faces_found:
                _keep_best(state, "likeness", step, score.likeness, models)
        _keep_best(state, "validation_loss", step, -val_loss, models)
        state.validations.append(record)
        models.unet.train()
        log.info("validation", extra={"fields": record})

    ckpt_every = config.checkpoint_interval()
    progress = _ProgressClock(config, on_progress, state.step)
    train_started = time.perf_counter()
    step_time = 0.0
    retries_left = config.oom_retries
    while state.step < config.steps:
        if should_stop is not None and should_stop():
            checkpoint()
            raise TrainingInterrupted(state.step)
        t0 = time.perf_counter()
        try:
            loss = trainer.step(state.step)
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not _is_oom(err):
                raise
            if retries_left <= 0:
                raise TrainingFailed(
                    f"out of GPU memory at step {state.step} even with micro-batch "
                    f"{trainer.batch_size} x {trainer.grad_accumulation} accumulation"
                ) from err
            retries_left -= 1
            how = trainer.shrink_for_oom()
            log.warning("out of memory at step %d; retrying with %s", state.step, how)
            continue
        if not math.isfinite(loss):
            raise TrainingFailed(f"loss became {loss} at step {state.step}")
        step_time += time.perf_counter() - t0
        state.losses.append(loss)
        state.step += 1
        if state.step % val_every == 0 or state.step == config.steps:
            validate(state.step)
        if state.step % ckpt_every == 0 and state.step < config.steps:
            checkpoint()
        progress.tick(state.step, state.losses)
    train_seconds = time.perf_counter() - train_started

    choice = choose_checkpoint(state, data, config, likeness is not None)
    if choice.warning:
        log.warning(choice.warning)
    load_lora_weights_into(models, state.best[choice.best_key]["lora"])
    meta = {
        "headshots.instance_prompt": config.instance_prompt,
        "headshots.steps": str(config.steps),
        **choice.metadata(),
        **(metadata or {}),
    }
    adapter = export_lora(models, config, meta)
    done_steps = config.steps - resumed_from
    return TrainingOutcome(
        adapter=adapter,
        rank=config.rank,
        steps=config.steps,
        chosen_step=choice.step,
        final_loss=choice.final_loss,
        likeness=choice.likeness,
        metric=choice.metric,
        instance_prompt=config.instance_prompt,
        validations=list(state.validations),
        resumed_from=resumed_from,
        seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
        seconds_per_step=step_time / max(1, done_steps),
        batch_size=trainer.batch_size,
        grad_accumulation=trainer.grad_accumulation,
        losses=list(state.losses),
        reason=choice.reason,
        validation_set=data.validation_set,
        validation_loss=choice.validation_loss,
    )


# Training steps the exported checkpoint's `final_loss` averages over (ending at its step).
FINAL_LOSS_WINDOW = 20


@dataclass(frozen=True)
class CheckpointChoice:
    step: int
    # "likeness" | "heldout_loss" | "training_crop_loss"
    metric: str
    reason: str
    best_key: str
    validation_set: str
    validation_names: list[str]
    validation_loss: float
    likeness: float
    final_loss: float
    validations: list[dict[str, float]]
    warning: str = ""

    def metadata(self) -> dict[str, str]:
        def rounded(v: float) -> float | None:
            return None if not math.isfinite(v) else float(f"{v:.6g}")

        table = [{k: rounded(float(v)) for k, v in r.items()} for r in self.validations]
        return {
            "headshots.chosen_step": str(self.step),
            "headshots.metric": self.metric,
            "headshots.choice": self.reason,
            "headshots.validation_set": self.validation_set,
            "headshots.validation_names": ",".join(self.validation_names),
            "headshots.validation_loss": f"{self.validation_loss:.6g}",
            "headshots.final_loss": f"{self.final_loss:.6g}",
            "headshots.likeness": f"{self.likeness:.6g}",
            "headshots.validations": json.dumps(table, separators=(",", ":")),
        }


def choose_checkpoint(
    state: TrainingState, data: _Data, config: TrainConfig, scored: bool
) -> CheckpointChoice:
    """Which kept checkpoint to export, and why: likeness when the renders held faces,
    else the lowest validation loss (on held-out data when there was any)."""
    by_step = {int(v["step"]): v for v in state.validations}
    last = by_step[max(by_step)]
    warning = ""
    if "likeness" in state.best:
        key, metric = "likeness", "likeness"
    else:
        key = "validation_loss"
        metric = "training_crop_loss" if data.validation_set == "training_crops" else "heldout_loss"
        if scored:
            warning = f"no face in any validation render: checkpoint chosen by {metric}"
    step = int(state.best[key]["step"])
    rec = by_step[step]
    loss = float(rec["validation_loss"])
    like = float(rec.get("likeness", float("nan")))
    where = {
        "heldout_selfies": f"{len(data.validation_names)} held-out selfie(s)",
        "heldout_class_images": f"{len(data.validation_names)} held-out class image(s)",
        "training_crops": "the training crops",
    }[data.validation_set]
    if metric == "likeness":
        reason = (
            f"highest likeness to the selfies: {like:.4f} at step {step} of {config.steps} "
            f"({int(rec.get('faces', 0))} faces in {config.validation_images} renders; "
            f"last step {float(last.get('likeness', float('nan'))):.4f})"
        )
    else:
        reason = (
            f"lowest denoising loss on {where}: {loss:.5g} at step {step} of {config.steps} "
            f"(last step {float(last['validation_loss']):.5g})"
        )
        if scored:
            reason += "; no face in any validation render, so likeness could not decide"
        if data.validation_set == "training_crops":
            reason += (
                f"; no selfie could be held out ({len(data.validation_names)} usable, "
                f"{config.min_train_photos} kept for training), so over-fitting is not visible"
            )
    window = state.losses[max(0, step - FINAL_LOSS_WINDOW) : step]
    final_loss = float(np.mean(window)) if window else float("nan")
    return CheckpointChoice(
        step=step,
        metric=metric,
        reason=reason,
        best_key=key,
        validation_set=data.validation_set,
        validation_names=list(data.validation_names),
        validation_loss=loss,
        likeness=like,
        final_loss=final_loss,
        validations=list(state.validations),
        warning=warning,
    )


def _keep_best(
    state: TrainingState,
    metric: str,
    step: int,
    score: float,
    models: DiffusionModels,
) -> None:
    best = state.best.get(metric)
    if best is None or score > float(best["score"]):
        state.best[metric] = {"step": step, "score": score, "lora": lora_weights(models)}


@torch.no_grad()
def render_validation(
    models: DiffusionModels, config: TrainConfig, autocast: torch.dtype | None
) -> list[np.ndarray]:
    """Fixed-seed renders of the instance prompt with the live LoRA."""
    pipe = models.pipeline()
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(777 + i) for i in range(config.validation_images)]
    with _autocast(models.device, autocast):
        out = pipe(
            [config.instance_prompt] * config.validation_images,
            num_inference_steps=config.validation_inference_steps,
            guidance_scale=config.validation_guidance,
            height=models.resolution,
            width=models.resolution,
            generator=gens,
            output_type="np",
        ).images
    return [(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in out]


class _ProgressClock:
    """Calls on_progress at most every `progress_interval_s` (and at the last step), with an
    ETA from the recent step rate."""

    def __init__(
        self, config: TrainConfig, cb: Callable[[Progress], None] | None, start_step: int
    ) -> None:
        self.config = config
        self.cb = cb
        self.last = 0.0
        self.t0 = time.perf_counter()
        self.start_step = start_step

    def tick(self, step: int, losses: list[float]) -> None:
        if self.cb is None:
            return
        now = time.perf_counter()
        if now - self.last < self.config.progress_interval_s and step < self.config.steps:
            return
        self.last = now
        done = max(1, step - self.start_step)
        rate = (now - self.t0) / done
        recent = losses[-20:] if losses else [float("nan")]
        self.cb(
            Progress(
                step=step,
                total=self.config.steps,
                loss=float(np.mean(recent)),
                eta_seconds=max(0.0, rate * (self.config.steps - step)),
            )
        )
