"""Generator settings (env prefix HS_GENERATOR_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class GeneratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HS_GENERATOR_", extra="ignore")

    # A local diffusers folder (SD 1.5 or SDXL class). Empty: `<models_dir>/tiny-sd15`.
    base_model: Path | None = None
    # Recorded with every candidate; empty: the base model folder's name.
    model_id: str = ""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # auto: bfloat16 on a GPU that supports it, float16 on older GPUs, float32 on CPU.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    channels_last: bool = True
    # torch.compile the UNet (reduce-overhead). Hot-swapping keeps the compiled graph.
    compile: bool = False

    # Sampling.
    scheduler: Literal["dpmpp_2m", "dpmpp_2m_karras", "unipc", "euler_a"] = "dpmpp_2m_karras"
    steps: int = 25
    guidance_scale: float = 5.0
    # 0: the model's native size (UNet sample size × VAE scale factor).
    width: int = 0
    height: int = 0
    # Images per pipeline call; 0: measured on this device at the first job of each size
    # (a few timed denoising steps per candidate batch, bounded by free memory).
    batch_size: int = 0
    max_batch_size: int = 32
    # VAE decode tiled/sliced when a batch would need more than this share of free memory.
    vae_slicing: Literal["auto", "on", "off"] = "auto"

    # Adapters.
    # Parsed adapters kept in host memory (least recently used goes first).
    adapter_cache_size: int = 8
    # With `compile`: the adapter slot's rank; lower ranks are zero-padded into it so a swap
    # never recompiles. Uncompiled pipelines hold each adapter at its own rank.
    lora_max_rank: int = 64
    # Fuse the LoRA into the weights when one order renders at least this many images.
    fuse_min_images: int = 64
    lora_scale: float = 1.0

    # Outputs.
    output_format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = 92

    # Preview (image-to-image on the base model).
    preview_strength: float = 0.55
    preview_steps: int = 20
    preview_max_input_pixels: int = 40_000_000
    # Optional identity adapter (IP-Adapter-style): a local folder with the weights file and
    # its image encoder. Empty: plain image-to-image.
    ip_adapter_path: Path | None = None
    ip_adapter_weight_name: str = "ip-adapter_sd15.safetensors"
    ip_adapter_scale: float = 0.6

    # Jobs.
    ack_wait_s: float = 60.0
    max_deliver: int = 5

    def base_model_path(self) -> Path:
        return self.base_model or (self.models_dir / "tiny-sd15")

    def resolved_model_id(self) -> str:
        return self.model_id or self.base_model_path().resolve().name
