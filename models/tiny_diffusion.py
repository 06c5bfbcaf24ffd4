"""Tiny SD1.5- and SDXL-shaped diffusers pipelines, built from configs with fixed seeds.

`python -m models.tiny_diffusion --out var/models/tiny-sd15`
`python -m models.tiny_diffusion --kind sdxl --out var/models/tiny-sdxl`

The folders are ordinary diffusers pipelines (`save_pretrained`), loaded with
`from_pretrained(path)` under `HF_HUB_OFFLINE=1` exactly like a real SD1.5/SDXL folder, so
the trainer and generator run the same code path on them. What is kept from the real
architectures, because the code depends on it:
- VAE downsample factor 8 (four VAE blocks) and 4 latent channels: 64 px images give 8x8
  latents, 512 px would give 64x64, as in SD1.5;
- SD1.5: one CLIPTextModel, cross-attention on its last hidden state;
- SDXL: CLIPTextModel + CLIPTextModelWithProjection, cross-attention on both penultimate
  hidden states concatenated, `addition_embed_type="text_time"` conditioning on the pooled
  text embedding plus the six size/crop numbers;
- a CLIP byte-level BPE tokenizer whose vocab.json/merges.txt this module writes: every byte
  is a token (any text tokenises) and a few hundred merges learnt here, by the ordinary BPE
  procedure, from a small word list (prompt words, class words, the instance token).

Everything is small enough that a LoRA training step at 64x64 px takes a few tens of
milliseconds on two CPU cores. The build is cached: a folder with a matching `tiny_model.json`
is returned at once (without importing torch or diffusers).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

# Bump when anything below changes what is built; a cached folder with another key is rebuilt.
BUILD_VERSION = 2
MARKER = "tiny_model.json"
KINDS = ("sd15", "sdxl")
SEED = 1234
RESOLUTION = 64
MAX_TOKENS = 77
# The rare instance token the trainer uses by default: it is one token of its own here, as
# rare tokens are in the real CLIP vocabulary.
INSTANCE_TOKEN = "ohwx"
# Log-variance of the tiny VAE posterior (std e^-5 = 0.007 before scaling).
LATENT_LOGVAR = -10.0

# Words the prompts of this project use (instance prompt, class words, style fragments,
# negatives). Word frequencies decide the merge order; repeated words weigh more.
_WORDS = """
a photo of ohwx man woman person portrait headshot professional corporate executive
business studio light lighting soft natural window daylight outdoor indoor office city
background backdrop grey gray white black dark navy charcoal blue brown beige green warm
cool neutral seamless blurred bokeh wearing shirt blazer suit tie sweater turtleneck jacket
dress blouse collar open crisp smart casual linen knit cardigan close up medium shot
closeup sharp focus on the eyes skin texture friendly smile smiling confident calm
expression lens mm depth field shallow high key low rembrandt dramatic cinematic golden
hour rim side front diffused editorial magazine linkedin resume actor author clean
modern minimal library bookshelf brick wall street park garden cafe and with in at from
by to for an is lowres blurry out jpeg artifacts watermark text logo signature deformed
face asymmetric extra fingers mutated hands disfigured cartoon illustration painting
render oversaturated harsh shadows busy flat bright cluttered desk colour color cast
fluorescent glasses hair beard young old adult headshots photograph photography camera
realistic photorealistic detailed quality best looking at viewer upper body shoulders
""".split()
_WEIGHTED = {"a": 8, "photo": 8, "of": 8, "ohwx": 8, "man": 6, "woman": 6, "person": 6}
N_MERGES = 600


def bytes_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet: printable bytes stand for themselves, the others are
    shifted above 255 so that every byte has a visible, non-space character (the mapping
    the `tokenizers` ByteLevel pre-tokenizer applies)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table: dict[int, str] = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def learn_merges(words: dict[str, int], n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE training (Sennrich et al. 2016): repeatedly merge the most frequent adjacent
    pair; ties broken by the pair itself so the result is deterministic. Words end with the
    CLIP end-of-word marker `</w>` on their last symbol."""
    alphabet = bytes_to_unicode()
    corpus: dict[tuple[str, ...], int] = {}
    for word, freq in words.items():
        symbols = [alphabet[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        corpus[tuple(symbols)] = corpus.get(tuple(symbols), 0) + freq
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, freq in corpus.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += freq
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = best[0] + best[1]
        new_corpus: dict[tuple[str, ...], int] = {}
        for symbols, freq in corpus.items():
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            new_corpus[tuple(out)] = new_corpus.get(tuple(out), 0) + freq
        corpus = new_corpus
    return merges


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's layout: the 256 byte symbols, the same with `</w>`, every merge result, then
    the start/end tokens."""
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in [*chars, *(c + "</w>" for c in chars), *(a + b for a, b in merges)]:
        vocab.setdefault(token, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """Write vocab.json and merges.txt (the files a CLIP tokenizer is made of)."""
    words = {w: _WEIGHTED.get(w, 1) for w in _WORDS}
    merges = learn_merges(words, N_MERGES)
    vocab = build_vocab(merges)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    return vocab_path, merges_path


def _tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    vocab_path, merges_path = write_tokenizer_files(folder)
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    merges = [
        tuple(line.split(" "))
        for line in merges_path.read_text(encoding="utf-8").splitlines()[1:]
        if line
    ]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)


def _text_encoder(
    tokenizer: Any, seed: int, hidden: int, *, with_projection: bool, projection_dim: int = 32
) -> Any:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_attention_heads=4,
        num_hidden_layers=3,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=projection_dim,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=eos,
        pad_token_id=eos,
    )
    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval()


def _vae(seed: int) -> Any:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    # Four blocks: three 2x downsamples, factor 8 as in SD's VAE.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=RESOLUTION,
        scaling_factor=1.0,
    ).eval()
    # A random encoder's posterior is mostly noise (its log-variance is as large as its
    # mean), so latents would carry almost nothing of the image. A trained VAE is nearly
    # deterministic: pin the log-variance low, as training would.
    half = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[half:] = 0.0
        vae.quant_conv.bias[half:] = LATENT_LOGVAR
    # Scale latents to unit variance, the way SD's 0.18215 was chosen (1 / std of the
    # latents of training images), measured here on fixed smooth random images.
    vae.register_to_config(scaling_factor=round(1.0 / _latent_std(vae, seed), 5))
    return vae


def _latent_std(vae: Any, seed: int) -> float:
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(16, 3, 8, 8, generator=gen)
    fine = 0.3 * torch.randn(16, 3, RESOLUTION, RESOLUTION, generator=gen)
    size = (RESOLUTION, RESOLUTION)
    images = torch.tanh(F.interpolate(coarse, size=size, mode="bicubic") + fine)
    with torch.no_grad():
        return float(vae.encode(images).latent_dist.mean.std())


def unet_config(kind: str) -> dict[str, Any]:
    """The tiny UNets: two resolution levels, cross-attention on both (so the LoRA has
    attention projections at every level), SDXL's text_time conditioning for `sdxl`."""
    common: dict[str, Any] = {
        "sample_size": RESOLUTION // 8,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": (32, 64),
        "norm_num_groups": 8,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    }
    if kind == "sd15":
        return {**common, "cross_attention_dim": 32, "attention_head_dim": 8}
    # SDXL: cross-attention on [penultimate(te1) ; penultimate(te2)] = 32 + 32, the
    # add-embedding on pooled te2 (32) + 6 time ids x addition_time_embed_dim (8) = 80.
    return {
        **common,
        "cross_attention_dim": 64,
        "attention_head_dim": (4, 8),
        "use_linear_projection": True,
        "transformer_layers_per_block": (1, 2),
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 80,
    }


def _unet(kind: str, seed: int) -> Any:
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**unet_config(kind)).eval()


def _scheduler(kind: str) -> Any:
    from diffusers import DDPMScheduler, EulerDiscreteScheduler

    # SD's training noise schedule (scaled_linear 0.00085..0.012 over 1000 steps).
    args: dict[str, Any] = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "steps_offset": 1,
        "prediction_type": "epsilon",
    }
    if kind == "sdxl":
        return EulerDiscreteScheduler(**args, timestep_spacing="leading")
    return DDPMScheduler(**args, clip_sample=False)


def build_key(kind: str) -> dict[str, Any]:
    return {"kind": kind, "version": BUILD_VERSION, "seed": SEED, "resolution": RESOLUTION}


def is_complete(out: Path, kind: str) -> bool:
    marker = out / MARKER
    if not marker.is_file() or not (out / "model_index.json").is_file():
        return False
    try:
        return json.loads(marker.read_text())["key"] == build_key(kind)
    except (ValueError, KeyError, TypeError):
        return False


def build(kind: str, out: Path) -> Path:
    """Build (or return the cached) tiny pipeline of `kind` into `out`."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    out = Path(out)
    if is_complete(out, kind):
        return out
    import torch

    # Build into a sibling folder and rename, so a crash never leaves a half folder that
    # looks complete.
    tmp = out.with_name(out.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = _tokenizer(tmp / "_tokenizer_src")
    with torch.random.fork_rng():
        unet = _unet(kind, SEED)
        vae = _vae(SEED + 1)
        text_encoder = _text_encoder(tokenizer, SEED + 2, 32, with_projection=False)
        if kind == "sd15":
            from diffusers import StableDiffusionPipeline

            pipe = StableDiffusionPipeline(
                unet=unet,
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=tokenizer,
                scheduler=_scheduler(kind),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        else:
            from diffusers import StableDiffusionXLPipeline

            text_encoder_2 = _text_encoder(tokenizer, SEED + 3, 32, with_projection=True)
            pipe = StableDiffusionXLPipeline(
                unet=unet,
                vae=vae,
                text_encoder=text_encoder,
                text_encoder_2=text_encoder_2,
                tokenizer=tokenizer,
                tokenizer_2=tokenizer,
                scheduler=_scheduler(kind),
            )
    pipe.save_pretrained(tmp)
    # The project's own vocab.json/merges.txt stay next to the saved tokenizer(s) so a reader
    # can see where they came from.
    for sub in ("tokenizer", "tokenizer_2") if kind == "sdxl" else ("tokenizer",):
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(tmp / "_tokenizer_src" / name, tmp / sub / name)
    shutil.rmtree(tmp / "_tokenizer_src")
    (tmp / MARKER).write_text(
        json.dumps({"key": build_key(kind), "built_at": time.time()}, indent=2)
    )
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=KINDS, default="sd15")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cached = is_complete(args.out, args.kind)
    build(args.kind, args.out)
    state = "cached" if cached else "built"
    print(f"{args.kind} tiny model {state} at {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
