"""Plan a round of sampling: which image gets which style, seed, name and batch.

Everything here is a pure function of the job, so a redelivered job plans the same images
under the same names, and any image can be re-rendered alone from its recorded seed:
- image `i` of round `r` is `r{r}-{i:05d}`, its seed `seed_base + r * ROUND_SEED_STRIDE + i`
  (top-up rounds get new seeds even when the gateway reuses `seed_base`), its style the
  order's styles taken in turn;
- batch `b` holds images `[b * batch_size, (b + 1) * batch_size)`; its filter job is
  `{order}:filter:r{r}:b{b}`.
Each image has its own `torch.Generator` (see `WarmPipeline.generators`), so an image does
not depend on which batch it was rendered in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from services.policy.styles import Style, StyleCatalogue, compose_prompt

# Images per round are bounded by the 5-digit result id.
MAX_IMAGES_PER_ROUND = 100_000
ROUND_SEED_STRIDE = MAX_IMAGES_PER_ROUND
SEED_MODULUS = 2**63


def result_id(round_: int, index: int) -> str:
    return f"r{round_}-{index:05d}"


def image_seed(seed_base: int, round_: int, index: int) -> int:
    return (int(seed_base) + round_ * ROUND_SEED_STRIDE + index) % SEED_MODULUS


@dataclass(frozen=True, slots=True)
class PlannedImage:
    index: int
    result_id: str
    style_id: str
    seed: int
    prompt: str
    negative_prompt: str


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    number: int
    images: tuple[PlannedImage, ...]


def plan_round(
    *,
    round_: int,
    count: int,
    seed_base: int,
    styles: Sequence[Style],
    catalogue: StyleCatalogue,
    instance_prompt: str,
    custom_prompt: str,
    batch_size: int,
) -> list[PlannedBatch]:
    if count < 1:
        raise ValueError(f"a round needs at least one image, got {count}")
    if count > MAX_IMAGES_PER_ROUND:
        raise ValueError(f"a round has at most {MAX_IMAGES_PER_ROUND} images, got {count}")
    if not styles:
        raise ValueError("a round needs at least one style")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    images = []
    for i in range(count):
        style = styles[i % len(styles)]
        images.append(
            PlannedImage(
                index=i,
                result_id=result_id(round_, i),
                style_id=style.id,
                seed=image_seed(seed_base, round_, i),
                prompt=compose_prompt(instance_prompt, style, custom_prompt),
                negative_prompt=catalogue.negative_for(style),
            )
        )
    return [
        PlannedBatch(b, tuple(images[start : start + batch_size]))
        for b, start in enumerate(range(0, count, batch_size))
    ]


class EtaTracker:
    """Seconds left, from the measured rate of images rendered in this job (images that were
    already there after a redelivery count as done but not towards the rate)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._rendered = 0
        self._render_s = 0.0
        self._t0 = time.monotonic()

    def add(self, images: int, rendered: bool, seconds: float = 0.0) -> None:
        self.done += images
        if rendered:
            self._rendered += images
            self._render_s += seconds

    def eta_seconds(self) -> float:
        left = self.total - self.done
        if left <= 0:
            return 0.0
        if self._rendered == 0:
            return 0.0
        return left * self._render_s / self._rendered
