"""Training examples: crops (plus mirror images) -> cached VAE latents, captions.

The VAE runs once per image, not once per step: each example keeps the mean and standard
deviation of its latent distribution, and every step draws a fresh latent from them with the
step's own generator (as diffusers' DreamBooth script does with `--cache_latents`), scaled
by the VAE's `scaling_factor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from services.trainer.preprocess import Crop, flipped

CLASS_WORDS = ("person", "man", "woman")


def caption(instance_token: str, class_word: str) -> str:
    """DreamBooth's instance prompt: a rare token bound to the subject, plus its class."""
    if class_word not in CLASS_WORDS:
        raise ValueError(f"class word must be one of {CLASS_WORDS}, got {class_word!r}")
    token = instance_token.strip()
    if not token or not token.isalnum():
        raise ValueError(f"instance token must be one alphanumeric word, got {instance_token!r}")
    return f"a photo of {token} {class_word}"


def class_prompt(class_word: str) -> str:
    return f"a photo of a {class_word}"


def augmented(crops: Sequence[Crop], flip: bool) -> list[Crop]:
    """The crops, each followed by its mirror image when `flip` (faces are near-symmetric;
    mirroring doubles the views without inventing anything)."""
    out: list[Crop] = []
    for c in crops:
        out.append(c)
        if flip:
            out.append(flipped(c))
    return out


def to_pixels(images: Sequence[np.ndarray]) -> torch.Tensor:
    """N HxWx3 uint8 -> N x 3 x H x W float in [-1, 1] (the VAE's input range)."""
    arr = np.stack([np.asarray(i, dtype=np.uint8) for i in images]).astype(np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).div(127.5).sub(1.0).contiguous()


@dataclass
class LatentCache:
    """Per-example latent distributions (already multiplied by the VAE scaling factor)."""

    mean: torch.Tensor  # N x 4 x h x w
    std: torch.Tensor

    def __len__(self) -> int:
        return int(self.mean.shape[0])

    def sample(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mean, std = self.mean[index], self.std[index]
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + std * eps.to(mean.device)

    def to(self, device: torch.device | str) -> LatentCache:
        return LatentCache(self.mean.to(device), self.std.to(device))


@torch.no_grad()
def encode_latents(
    vae: torch.nn.Module,
    images: Sequence[np.ndarray],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int = 8,
) -> LatentCache:
    """Run the VAE encoder once over the images."""
    scale = float(getattr(vae.config, "scaling_factor", 0.18215))
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    means, stds = [], []
    for i in range(0, len(images), batch_size):
        pixels = to_pixels(images[i : i + batch_size]).to(device=device, dtype=dtype)
        dist = vae.encode(pixels).latent_dist
        means.append(((dist.mean - shift) * scale).float().cpu())
        stds.append((dist.std * scale).float().cpu())
    return LatentCache(torch.cat(means), torch.cat(stds))
