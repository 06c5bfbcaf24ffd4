"""Preview: one selfie + one style -> a few images in seconds, without training.

Image-to-image on the base model (the order LoRA, if one is active, is switched off for the
call): the selfie is decoded safely, turned upright from its EXIF orientation, stripped of
metadata, centre-cropped to the model's aspect and resized, then partly re-noised
(`preview_strength`) and denoised towards the style's prompt. With an identity adapter
configured (`HS_GENERATOR_IP_ADAPTER_PATH`), the selfie also conditions every step.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

from services.generator.output import EncodedImage, encode_image
from services.generator.settings import GeneratorSettings
from services.policy.limits import limits
from services.policy.prompt_screen import screen_prompt
from services.policy.styles import StyleCatalogue, StyleError, compose_prompt

LIMITS = limits()

if TYPE_CHECKING:
    from services.generator.pipeline import WarmPipeline

PREVIEW_SUBJECT = "professional headshot photo of the person"
MAX_INPUT_BYTES = 20 * 1024 * 1024


class PreviewRefused(ValueError):
    """Bad input to a preview; `field` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class PreviewResult:
    images: list[tuple[int, EncodedImage]]  # (seed, image)
    model_id: str
    seconds: float


def decode_selfie(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise PreviewRefused("image", "no image in the request")
    if len(data) > MAX_INPUT_BYTES:
        raise PreviewRefused("image", f"image is larger than {MAX_INPUT_BYTES >> 20} MiB")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise PreviewRefused(
                    "image", f"image has {img.width}x{img.height} pixels; the limit is {max_pixels}"
                )
            if img.format not in ("JPEG", "PNG", "WEBP"):
                raise PreviewRefused("image", f"unsupported image format {img.format}")
            img.load()
            upright = ImageOps.exif_transpose(img)
            rgb = upright.convert("RGB")
    except PreviewRefused:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise PreviewRefused("image", f"image could not be decoded: {err}") from err
    # Re-built from pixels: nothing of the source's metadata travels on.
    return Image.frombytes("RGB", rgb.size, rgb.tobytes())


def fit(img: Image.Image, width: int, height: int) -> Image.Image:
    """Centre crop to the target aspect, then resize (selfies put the face near the centre)."""
    return ImageOps.fit(img, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.4))


class Previewer:
    def __init__(
        self, settings: GeneratorSettings, pipeline: WarmPipeline, catalogue: StyleCatalogue
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.catalogue = catalogue

    def preview(
        self, image: bytes, style_id: str, count: int, seed: int, custom_prompt: str = ""
    ) -> PreviewResult:
        t0 = time.perf_counter()
        try:
            style = self.catalogue.get(style_id)
        except StyleError as err:
            raise PreviewRefused("style_id", str(err)) from err
        screened = screen_prompt(custom_prompt)
        if not screened.ok:
            raise PreviewRefused("custom_prompt", screened.reason)
        if count < 0:
            raise PreviewRefused("count", "count must not be negative")
        n = min(max(1, count), LIMITS.max_preview_count)
        selfie = decode_selfie(image, self.settings.preview_max_input_pixels)
        init = fit(selfie, self.pipeline.width, self.pipeline.height)
        seeds = [(int(seed) + i) % (2**63) for i in range(n)]
        arrays = self.pipeline.img2img(
            init,
            compose_prompt(PREVIEW_SUBJECT, style, screened.text),
            self.catalogue.negative_for(style),
            seeds,
            strength=self.settings.preview_strength,
            steps=self.settings.preview_steps,
            ip_image=selfie if self.settings.ip_adapter_path else None,
        )
        images = [
            (s, encode_image(a, self.settings.output_format, self.settings.jpeg_quality))
            for s, a in zip(seeds, arrays, strict=True)
        ]
        return PreviewResult(images, self.pipeline.model_id, time.perf_counter() - t0)
