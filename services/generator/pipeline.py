"""The warm pipeline: one base model per process, order adapters swapped in and out.

- The base model (a local diffusers folder, SD 1.5 or SDXL class) is loaded once and stays
  on the device. `WarmPipeline.base_loads` counts loads in this process.
- An order's LoRA lives in one adapter slot of the UNet. The next order's LoRA replaces the
  slot's weights in place (`hotswap=True`: no new modules). Uncompiled, the slot holds the
  adapter at its own rank: an adapter of the same rank and targets is hot-swapped, any other
  is loaded fresh after unloading the old one (zero-padding every adapter to a common rank
  would cost every image the padded branch: ≈ 6 % per image on the bench's mid model).
  A compiled UNet cannot change shape without recompiling, so there (only) the slot is
  prepared once at `lora_max_rank` and smaller ranks are zero-padded into it.
- Parsed adapters are kept in an LRU in host memory (`AdapterCache`), so the blob store is
  read once per adapter while it stays in use.
- For long runs of one order the LoRA can be fused into the UNet weights (no LoRA branch in
  the forward pass). Unfusing restores a saved copy of the original weights, so the base
  is bit-identical afterwards (peft's own unmerge subtracts the delta again: close, not exact).
- Every model call holds `lock`: a process drives one device, and preview requests interleave
  with order batches at batch boundaries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from services.generator.settings import GeneratorSettings

log = logging.getLogger(__name__)

# diffusers matches adapter names by substring: a long name that nothing else contains.
ADAPTER_SLOT = "headshots_order_lora_slot"
# Rough activation memory of one UNet sample per latent pixel in half precision, for the
# automatic batch size: bf16 peak growth per sample ÷ latent pixels measured on an H100
# (bench_generator --gpu: ~15 KB SD1.5 512², ~11 KB SDXL 1024²), with headroom.
_ACT_BYTES_PER_LATENT_PX = 24 * 1024


# The batch probe: denoising steps per timed call, and the throughput gain (share) a larger
# batch must bring to be preferred over a smaller one.
PROBE_STEPS = 3
BATCH_GAIN = 0.05


@dataclass(frozen=True)
class BatchProbe:
    """What `measure_batch_size` measured: UNet-bound images/s per batch size."""

    width: int
    height: int
    device: str
    images_per_s: dict[int, float]
    memory_cap: int
    chosen: int
    seconds: float

    def fields(self) -> dict[str, Any]:
        return {
            "size": f"{self.width}x{self.height}",
            "device": self.device,
            "images_per_s": {b: round(r, 3) for b, r in self.images_per_s.items()},
            "memory_cap": self.memory_cap,
            "batch_size": self.chosen,
            "probe_s": round(self.seconds, 2),
        }


class AdapterError(ValueError):
    """An adapter file that is not a usable LoRA for this base model."""


@dataclass(frozen=True, slots=True)
class SwapInfo:
    key: str
    # "active" (already in the slot), "hotswap", "load" (fresh load)
    mode: str
    seconds: float
    cache_hit: bool


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def parse_adapter(data: bytes | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers-format LoRA state dict from .safetensors bytes (or a dict, passed on)."""
    if isinstance(data, dict):
        sd = data
    else:
        from safetensors.torch import load as load_safetensors

        try:
            sd = load_safetensors(bytes(data))
        except Exception as err:
            raise AdapterError(f"adapter is not a readable .safetensors file: {err}") from err
    if not sd:
        raise AdapterError("adapter file holds no tensors")
    if not all("lora" in k for k in sd):
        raise AdapterError("adapter is not a LoRA (parameter names without 'lora')")
    return sd


class AdapterCache:
    """LRU of parsed adapters in host memory, keyed by blob key."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._items: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        with self._lock:
            sd = self._items.get(key)
            if sd is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return sd

    def put(self, key: str, sd: dict[str, torch.Tensor]) -> None:
        with self._lock:
            self._items[key] = sd
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def discard(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)


def _scheduler_for(name: str, config: Any) -> Any:
    from diffusers import (
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    if name.startswith("dpmpp_2m"):
        # DPM-Solver++ (2M): good images in 20-30 steps (Lu et al. 2022).
        return DPMSolverMultistepScheduler.from_config(
            config,
            algorithm_type="dpmsolver++",
            solver_order=2,
            use_karras_sigmas=name.endswith("karras"),
        )
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config)
    return EulerAncestralDiscreteScheduler.from_config(config)


class WarmPipeline:
    """The process's diffusion pipeline. Build with `WarmPipeline.load(settings)`."""

    base_loads: ClassVar[int] = 0

    def __init__(self, pipe: Any, settings: GeneratorSettings, model_id: str) -> None:
        self.pipe = pipe
        self.settings = settings
        self.model_id = model_id
        self.device: torch.device = pipe.unet.device
        self.dtype: torch.dtype = pipe.unet.dtype
        self.kind = "sdxl" if "XL" in type(pipe).__name__ else "sd15"
        self.lock = threading.RLock()
        self.adapters = AdapterCache(settings.adapter_cache_size)
        self.active_key: str | None = None
        self.fused = False
        self._fuse_snapshot: dict[str, torch.Tensor] = {}
        self._img2img: Any = None
        self.batch_probes: dict[tuple[int, int], BatchProbe] = {}
        scale = getattr(pipe, "vae_scale_factor", 8)
        sample = int(pipe.unet.config.sample_size)
        self.width = settings.width or sample * scale
        self.height = settings.height or sample * scale

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, settings: GeneratorSettings) -> WarmPipeline:
        from diffusers import AutoPipelineForText2Image

        path = settings.base_model_path()
        if not (Path(path) / "model_index.json").is_file():
            raise FileNotFoundError(
                f"base model folder {path} has no model_index.json (set HS_GENERATOR_BASE_MODEL "
                "to a local diffusers folder, or run `make models` for the tiny one)"
            )
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
        model_index = (Path(path) / "model_index.json").read_text()
        if '"safety_checker"' in model_index:
            kwargs |= {"safety_checker": None, "requires_safety_checker": False}
        pipe = AutoPipelineForText2Image.from_pretrained(str(path), **kwargs)
        pipe.scheduler = _scheduler_for(settings.scheduler, pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device)
        if settings.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        WarmPipeline.base_loads += 1
        warm = cls(pipe, settings, settings.resolved_model_id())
        if settings.compile:
            # Hot-swap must be prepared before the first adapter and before compiling.
            warm._prepare_hotswap()
            pipe.unet = torch.compile(pipe.unet, mode="reduce-overhead", fullgraph=False)
        log.info(
            "base model loaded",
            extra={
                "fields": {
                    "model": warm.model_id,
                    "kind": warm.kind,
                    "device": str(device),
                    "dtype": str(dtype),
                    "seconds": round(time.perf_counter() - t0, 2),
                    "loads": WarmPipeline.base_loads,
                }
            },
        )
        return warm

    # ------------------------------------------------------------------ adapters

    def _prepare_hotswap(self) -> None:
        """Compiled UNet only: a slot of `lora_max_rank` that every smaller adapter is
        zero-padded into, so a swap never changes a tensor shape (no recompilation)."""
        if not getattr(self.pipe.unet, "peft_config", None):
            self.pipe.enable_lora_hotswap(target_rank=self.settings.lora_max_rank)

    def slot_ranks(self) -> set[int]:
        """The ranks of the LoRA tensors now in the UNet's slot (empty when none)."""
        return {
            int(module.lora_A[ADAPTER_SLOT].weight.shape[0])
            for _, module in self._lora_layers()
            if ADAPTER_SLOT in getattr(module, "lora_A", {})
        }

    def activate(self, key: str, state_dict: dict[str, torch.Tensor]) -> SwapInfo:
        """Make `key`'s LoRA the active one (hot-swapped into the slot when possible)."""
        with self.lock:
            t0 = time.perf_counter()
            cache_hit = self.adapters.get(key) is not None
            self.adapters.put(key, state_dict)
            if self.active_key == key:
                self.pipe.enable_lora()
                return SwapInfo(key, "active", time.perf_counter() - t0, cache_hit)
            self.unfuse()
            mode = "hotswap"
            has_text_encoder = any(k.startswith("text_encoder") for k in state_dict)
            # Uncompiled, the slot has the active adapter's rank: another rank loads fresh
            # (exact, and no padded branch to compute).
            same_shape = self.settings.compile or adapter_ranks(state_dict) == self.slot_ranks()
            if (
                self.active_key is not None
                and same_shape
                and not has_text_encoder
                and not self._te_has_lora()
            ):
                try:
                    self.pipe.load_lora_weights(
                        _own_copy(state_dict), adapter_name=ADAPTER_SLOT, hotswap=True
                    )
                except Exception as err:  # different targets or rank: load fresh below
                    log.info("hot-swap not possible (%s); loading the adapter fresh", err)
                    mode = "load"
            else:
                mode = "load"
            if mode == "load":
                self._load_fresh(state_dict)
            self.pipe.set_adapters([ADAPTER_SLOT], adapter_weights=[self.settings.lora_scale])
            self.pipe.enable_lora()
            self.active_key = key
            return SwapInfo(key, mode, time.perf_counter() - t0, cache_hit)

    def _te_has_lora(self) -> bool:
        te = getattr(self.pipe, "text_encoder", None)
        return bool(getattr(te, "peft_config", None))

    def _load_fresh(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.pipe.unload_lora_weights()
        self.active_key = None
        try:
            self.pipe.load_lora_weights(_own_copy(state_dict), adapter_name=ADAPTER_SLOT)
        except Exception as err:
            if not self.settings.compile:
                self.pipe.unload_lora_weights()
                raise AdapterError(
                    f"adapter does not fit base model {self.model_id}: {err}"
                ) from err
            # Compiled: e.g. a rank above lora_max_rank. Load it unpadded (the UNet
            # recompiles once; later swaps load fresh too).
            self.pipe.unload_lora_weights()
            self.pipe.unet._prepare_lora_hotswap_kwargs = None
            try:
                self.pipe.load_lora_weights(_own_copy(state_dict), adapter_name=ADAPTER_SLOT)
            except Exception as err2:
                self.pipe.unload_lora_weights()
                raise AdapterError(
                    f"adapter does not fit base model {self.model_id}: {err2}"
                ) from err

    def deactivate(self) -> None:
        """Back to the bare base model (the slot is emptied)."""
        with self.lock:
            self.unfuse()
            self.pipe.unload_lora_weights()
            self.active_key = None

    def _lora_layers(self) -> Iterator[tuple[str, torch.nn.Module]]:
        from peft.tuners.lora import LoraLayer

        for name, module in self.pipe.unet.named_modules():
            if isinstance(module, LoraLayer):
                yield name, module

    def fuse(self) -> None:
        """Merge the active LoRA into the UNet weights (faster forward for long runs)."""
        with self.lock:
            if self.fused or self.active_key is None:
                return
            self._fuse_snapshot = {
                name: module.get_base_layer().weight.detach().clone()
                for name, module in self._lora_layers()
            }
            self.pipe.fuse_lora(components=["unet"], adapter_names=[ADAPTER_SLOT])
            self.fused = True

    def unfuse(self) -> None:
        """Undo `fuse` exactly: the saved original weights are copied back."""
        with self.lock:
            if not self.fused:
                return
            self.pipe.unfuse_lora(components=["unet"])
            layers = dict(self._lora_layers())
            with torch.no_grad():
                for name, weight in self._fuse_snapshot.items():
                    layers[name].get_base_layer().weight.copy_(weight)
            self._fuse_snapshot = {}
            self.fused = False

    @contextlib.contextmanager
    def base_only(self) -> Iterator[None]:
        """The base model without the order's LoRA, restored afterwards (preview)."""
        with self.lock:
            was_fused = self.fused
            active = self.active_key is not None
            if active:
                self.unfuse()
                self.pipe.disable_lora()
            try:
                yield
            finally:
                if active:
                    self.pipe.enable_lora()
                    if was_fused:
                        self.fuse()

    # ------------------------------------------------------------------ sizing

    def auto_batch_size(self, width: int, height: int) -> int:
        """Images per call for this size, from a timed probe on this device (once per size
        and process; `batch_probes` keeps the measurements)."""
        with self.lock:
            probe = self.batch_probes.get((width, height))
            if probe is None:
                probe = self.measure_batch_size(width, height)
                self.batch_probes[(width, height)] = probe
                log.info("batch size measured", extra={"fields": probe.fields()})
            return probe.chosen

    def memory_cap(self, width: int, height: int) -> int:
        """The largest batch the free memory allows (device memory on a GPU, host memory
        on the CPU), from the activation size per latent pixel; at most max_batch_size."""
        cap = max(1, self.settings.max_batch_size)
        latent_px = (width // 8) * (height // 8)
        elem = torch.finfo(self.dtype).bits // 8
        # CFG: two samples per image; the constant was measured in half precision.
        per_image = 2 * latent_px * _ACT_BYTES_PER_LATENT_PX * max(1, elem // 2)
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
        else:
            free = _host_available_bytes()
        return int(max(1, min(cap, (0.7 * free) // per_image)))

    @torch.inference_mode()
    def measure_batch_size(self, width: int, height: int) -> BatchProbe:
        """Time a few denoising steps (text encoder + UNet with CFG, no VAE decode) at batch
        1, 2, 4, ... up to the memory cap, doubling while images/s still grows by at least
        `BATCH_GAIN`; choose the smallest batch within `BATCH_GAIN` of the best rate (a
        bigger batch only adds latency then)."""
        t_start = time.perf_counter()
        cap = self.memory_cap(width, height)
        rates: dict[int, float] = {}

        def call(n: int) -> float:
            t0 = time.perf_counter()
            self.pipe(
                prompt=["a photo"] * n,
                negative_prompt=["blurry"] * n,
                num_inference_steps=PROBE_STEPS,
                guidance_scale=self.settings.guidance_scale,
                width=width,
                height=height,
                generator=self.generators(range(n)),
                output_type="latent",
            )
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return time.perf_counter() - t0

        call(1)  # first call pays one-off costs (allocations, kernel selection)
        batch, best = 1, 0.0
        while batch <= cap:
            try:
                seconds = min(call(batch) for _ in range(2))
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                break
            rates[batch] = batch / seconds
            if rates[batch] < best * (1 + BATCH_GAIN):
                break
            best = max(best, rates[batch])
            batch *= 2
        top = max(rates.values())
        chosen = min(b for b, r in rates.items() if r >= top / (1 + BATCH_GAIN))
        return BatchProbe(
            width=width,
            height=height,
            device=str(self.device),
            images_per_s=rates,
            memory_cap=cap,
            chosen=chosen,
            seconds=time.perf_counter() - t_start,
        )

    def _configure_vae(self, batch: int, width: int, height: int) -> None:
        vae = self.pipe.vae
        mode = self.settings.vae_slicing
        slicing = tiling = mode == "on"
        if mode == "auto" and self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            # Decoder peak ≈ a few full-resolution 128-channel maps per image.
            per_image = width * height * 128 * torch.finfo(self.dtype).bits // 8 * 6
            slicing = batch * per_image > 0.5 * free
            tiling = per_image > 0.5 * free
        (vae.enable_slicing if slicing else vae.disable_slicing)()
        (vae.enable_tiling if tiling else vae.disable_tiling)()

    # ------------------------------------------------------------------ sampling

    @staticmethod
    def generators(seeds: Sequence[int]) -> list[torch.Generator]:
        # One CPU generator per image: an image's noise depends on its seed only, not on its
        # batch neighbours or the device, so any image can be re-rendered alone.
        return [torch.Generator("cpu").manual_seed(int(s) % (2**63)) for s in seeds]

    def render(
        self,
        prompts: Sequence[str],
        negative_prompts: Sequence[str],
        seeds: Sequence[int],
        *,
        steps: int | None = None,
        guidance_scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> list[np.ndarray]:
        """One batched call: image i from (prompts[i], negative_prompts[i], seeds[i]).
        Returns HxWx3 uint8 arrays."""
        if not (len(prompts) == len(negative_prompts) == len(seeds)) or not prompts:
            raise ValueError("render needs equally long, non-empty prompts, negatives and seeds")
        w, h = width or self.width, height or self.height
        with self.lock, torch.inference_mode():
            self._configure_vae(len(prompts), w, h)
            out = self.pipe(
                prompt=list(prompts),
                negative_prompt=list(negative_prompts),
                num_inference_steps=steps or self.settings.steps,
                guidance_scale=self.settings.guidance_scale
                if guidance_scale is None
                else guidance_scale,
                width=w,
                height=h,
                generator=self.generators(seeds),
                output_type="np",
            )
        return [_to_uint8(img) for img in out.images]

    def img2img(
        self,
        image: Any,
        prompt: str,
        negative_prompt: str,
        seeds: Sequence[int],
        *,
        strength: float,
        steps: int,
        ip_image: Any = None,
    ) -> list[np.ndarray]:
        """Image-to-image on the base model (no order LoRA), one image per seed."""
        from diffusers import AutoPipelineForImage2Image

        with self.lock, self.base_only(), torch.inference_mode():
            if self._img2img is None:
                self._img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
                self._img2img.set_progress_bar_config(disable=True)
            pipe = self._img2img
            self._configure_vae(len(seeds), image.width, image.height)
            kwargs: dict[str, Any] = {}
            with self._identity_adapter(pipe, ip_image) as ip_kwargs:
                kwargs |= ip_kwargs
                out = pipe(
                    prompt=[prompt] * len(seeds),
                    negative_prompt=[negative_prompt] * len(seeds),
                    image=[image] * len(seeds),
                    strength=strength,
                    num_inference_steps=steps,
                    guidance_scale=self.settings.guidance_scale,
                    generator=self.generators(seeds),
                    output_type="np",
                    **kwargs,
                )
        return [_to_uint8(img) for img in out.images]

    @contextlib.contextmanager
    def _identity_adapter(self, pipe: Any, ip_image: Any) -> Iterator[dict[str, Any]]:
        """An IP-Adapter-style identity adapter for the preview, when one is configured.

        It is attached for the call and detached after: its attention processors need an
        image embedding on every UNet call, which order sampling does not have.
        """
        path = self.settings.ip_adapter_path
        if path is None or ip_image is None:
            yield {}
            return
        pipe.load_ip_adapter(
            str(path),
            subfolder="",
            weight_name=self.settings.ip_adapter_weight_name,
            image_encoder_folder="image_encoder",
            local_files_only=True,
        )
        try:
            pipe.set_ip_adapter_scale(self.settings.ip_adapter_scale)
            yield {"ip_adapter_image": ip_image}
        finally:
            pipe.unload_ip_adapter()


def _host_available_bytes() -> int:
    """Memory the host can still give (MemAvailable on Linux: free plus reclaimable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _own_copy(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors the slot may keep. diffusers loads LoRAs with `low_cpu_mem_usage` (peft's
    `load_state_dict(assign=True)`), so the slot's parameters *are* the given tensors, and a
    later hot-swap copies the next adapter into them in place: without a copy, swapping C in
    overwrote the cached A (an A -> C -> B -> A round trip rendered other images for A)."""
    return {k: v.clone() for k, v in state_dict.items()}


def adapter_ranks(state_dict: dict[str, torch.Tensor]) -> set[int]:
    """The ranks of a diffusers-format LoRA's UNet down-projections."""
    return {
        int(v.shape[0])
        for k, v in state_dict.items()
        if k.startswith("unet.") and ("lora.down" in k or "lora_A" in k)
    }


def adapter_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    """Serialise a LoRA state dict to .safetensors bytes (tests, tools)."""
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state_dict.items()})


__all__ = [
    "ADAPTER_SLOT",
    "AdapterCache",
    "AdapterError",
    "SwapInfo",
    "WarmPipeline",
    "adapter_bytes",
    "adapter_ranks",
    "parse_adapter",
]
