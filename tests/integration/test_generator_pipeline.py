"""The warm pipeline on a tiny SD1.5-class model: determinism, adapter swaps, batching."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from services.generator.output import DIGITAL_SOURCE_TYPE, digital_source_type
from services.generator.pipeline import AdapterError, WarmPipeline, adapter_bytes, parse_adapter
from services.generator.preview import Previewer, PreviewRefused
from services.generator.settings import GeneratorSettings
from services.policy.styles import load_catalogue
from tests.support.generator_models import make_adapter, tiny_sd15

pytestmark = pytest.mark.integration

PROMPT = ["photo of hsk person, navy blazer, soft studio light"]
NEG = ["blurry"]


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> WarmPipeline:
    base = tiny_sd15(tmp_path_factory.mktemp("models") / "tiny-sd15")
    return WarmPipeline.load(GeneratorSettings(base_model=base, steps=6, device="cpu"))


@pytest.fixture(scope="module")
def adapters(warm: WarmPipeline) -> dict[str, dict[str, torch.Tensor]]:
    # Rank 8 for B: swapping between ranks still goes through the hot-swap path.
    return {
        "A": make_adapter(warm.pipe.unet, 1, rank=4),
        "B": make_adapter(warm.pipe.unet, 2, rank=8),
        "C": make_adapter(warm.pipe.unet, 3, rank=4),
    }


def render1(warm: WarmPipeline, seed: int) -> np.ndarray:
    return warm.render(PROMPT, NEG, [seed])[0]


def test_same_seed_renders_the_same_image_and_another_adapter_changes_it(
    warm: WarmPipeline, adapters: dict[str, dict[str, torch.Tensor]]
) -> None:
    warm.activate("tenants/t/orders/a/adapter/lora.safetensors", adapters["A"])
    first, again = render1(warm, 11), render1(warm, 11)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, render1(warm, 12))
    warm.activate("tenants/t/orders/b/adapter/lora.safetensors", adapters["B"])
    assert np.abs(render1(warm, 11).astype(int) - first).mean() > 2.0


def test_a_b_a_swap_gives_bit_identical_images(
    warm: WarmPipeline, adapters: dict[str, dict[str, torch.Tensor]]
) -> None:
    warm.deactivate()
    kept = {k: v.clone() for k, v in adapters["A"].items()}
    first = warm.activate("a", adapters["A"])
    a1 = warm.render(PROMPT * 2, NEG * 2, [5, 6])
    # Same rank: swapped in place. Another rank: loaded fresh at its own rank.
    to_c = warm.activate("c", adapters["C"])
    to_b = warm.activate("b", adapters["B"])
    assert warm.slot_ranks() == {8}
    b1 = warm.render(PROMPT * 2, NEG * 2, [5, 6])
    back = warm.activate("a", adapters["A"])
    assert warm.slot_ranks() == {4}
    a2 = warm.render(PROMPT * 2, NEG * 2, [5, 6])
    assert (first.mode, to_c.mode, to_b.mode, back.mode) == ("load", "hotswap", "load", "load")
    # Swapping C into the slot did not write into the cached copy of A.
    assert all(torch.equal(kept[k], adapters["A"][k]) for k in kept)
    assert back.cache_hit
    assert all(np.array_equal(x, y) for x, y in zip(a1, a2, strict=True))
    assert not np.array_equal(a1[0], b1[0])
    # A hot-swap back to A is exact too.
    warm.activate("c", adapters["C"])
    assert warm.activate("a", adapters["A"]).mode == "hotswap"
    assert all(
        np.array_equal(x, y)
        for x, y in zip(a1, warm.render(PROMPT * 2, NEG * 2, [5, 6]), strict=True)
    )


def test_rank_16_adapter_is_held_at_rank_16_and_renders_as_the_padded_slot_did(
    warm: WarmPipeline, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Uncompiled, the slot holds the adapter's own rank (no zero-padded rank-64 branch),
    and the images are those the padded slot rendered (the former behaviour)."""
    lora = make_adapter(warm.pipe.unet, 7, rank=16)
    warm.deactivate()
    warm.activate("r16", lora)
    assert warm.slot_ranks() == {16}
    for _, module in warm._lora_layers():
        assert module.lora_A["headshots_order_lora_slot"].weight.shape[0] == 16
        assert module.lora_B["headshots_order_lora_slot"].weight.shape[1] == 16
    seeds = [21, 22]
    ours = warm.render(PROMPT * 2, NEG * 2, seeds)

    padded = WarmPipeline.load(warm.settings)
    padded.pipe.enable_lora_hotswap(target_rank=64)
    padded.activate("r16", lora)
    assert padded.slot_ranks() == {64}
    theirs = padded.render(PROMPT * 2, NEG * 2, seeds)
    for x, y in zip(ours, theirs, strict=True):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1
    assert not np.array_equal(ours[0], ours[1])


def test_batch_size_is_measured_once_per_size_and_bounded(warm: WarmPipeline) -> None:
    before = render1(warm, 4)
    w, h = warm.width, warm.height
    chosen = warm.auto_batch_size(w, h)
    probe = warm.batch_probes[(w, h)]
    assert chosen == probe.chosen and probe.device == "cpu"
    sizes = list(probe.images_per_s)
    assert sizes[0] == 1 and all(b == 2 * a for a, b in itertools.pairwise(sizes))
    assert max(sizes) <= probe.memory_cap <= warm.settings.max_batch_size
    assert all(r > 0 for r in probe.images_per_s.values())
    # The rule: the smallest batch within BATCH_GAIN of the best measured rate.
    top = max(probe.images_per_s.values())
    assert probe.images_per_s[chosen] * 1.05 >= top
    assert all(probe.images_per_s[b] * 1.05 < top for b in sizes if b < chosen)
    # Measured once: the second call reads the cached measurement.
    assert warm.auto_batch_size(w, h) == chosen and warm.batch_probes[(w, h)] is probe
    # The probe leaves no trace in what is rendered.
    assert np.array_equal(render1(warm, 4), before)
    capped = WarmPipeline(warm.pipe, warm.settings.model_copy(update={"max_batch_size": 2}), "m")
    assert capped.auto_batch_size(w, h) <= 2
    assert max(capped.batch_probes[(w, h)].images_per_s) <= 2


def test_batch_of_8_equals_8_single_calls(
    warm: WarmPipeline, adapters: dict[str, dict[str, torch.Tensor]]
) -> None:
    warm.activate("c", adapters["C"])
    prompts = [f"photo of hsk person, style {i}" for i in range(8)]
    negs = ["blurry, lowres"] * 8
    seeds = [1000 + i for i in range(8)]
    batch = warm.render(prompts, negs, seeds)
    singles = [warm.render([p], [n], [s])[0] for p, n, s in zip(prompts, negs, seeds, strict=True)]
    for b, s in zip(batch, singles, strict=True):
        diff = np.abs(b.astype(int) - s.astype(int))
        # Float reductions run in another order for a batch: off by at most a rounding step.
        assert diff.max() <= 2 and diff.mean() < 0.05
    # ...and the 8 images are 8 different images.
    assert len({b.tobytes() for b in batch}) == 8


def test_fuse_is_close_and_unfuse_restores_the_weights_exactly(
    warm: WarmPipeline, adapters: dict[str, dict[str, torch.Tensor]]
) -> None:
    warm.activate("a", adapters["A"])
    before = {k: v.clone() for k, v in warm.pipe.unet.state_dict().items() if "base_layer" in k}
    unfused = render1(warm, 3)
    warm.fuse()
    fused = render1(warm, 3)
    warm.unfuse()
    after = {k: v for k, v in warm.pipe.unet.state_dict().items() if "base_layer" in k}
    assert before.keys() == after.keys() and before
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.abs(fused.astype(int) - unfused.astype(int)).max() <= 2
    assert np.array_equal(render1(warm, 3), unfused)


def test_adapter_that_is_not_a_lora_is_refused(warm: WarmPipeline) -> None:
    with pytest.raises(AdapterError, match="not a readable"):
        parse_adapter(b"not safetensors")
    with pytest.raises(AdapterError, match="not a LoRA"):
        parse_adapter(adapter_bytes({"unet.conv.weight": torch.zeros(2)}))
    wrong = {"unet.nowhere.to_q.lora.down.weight": torch.ones(4, 4)}
    with pytest.raises(AdapterError):
        warm.activate("wrong", wrong)


def test_preview_is_base_model_img2img_from_a_selfie(
    warm: WarmPipeline, adapters: dict[str, dict[str, torch.Tensor]], faces_dir: Path
) -> None:
    settings = warm.settings.model_copy(update={"preview_steps": 6, "preview_strength": 0.6})
    previewer = Previewer(settings, warm, load_catalogue())
    selfie = next(iter(sorted((faces_dir / "obama").glob("*.jp*g")))).read_bytes()
    style = "navy-blazer-soft-studio-grey"
    warm.deactivate()
    res = previewer.preview(selfie, style, count=2, seed=9)
    assert [s for s, _ in res.images] == [9, 10]
    assert res.model_id == warm.model_id
    for _, img in res.images:
        assert (img.width, img.height) == (warm.width, warm.height)
        assert digital_source_type(img.data) == DIGITAL_SOURCE_TYPE
    # An order's adapter being active does not leak into previews.
    warm.activate("a", adapters["A"])
    again = previewer.preview(selfie, style, count=2, seed=9)
    assert [i.data for _, i in again.images] == [i.data for _, i in res.images]
    with pytest.raises(PreviewRefused, match="brand") as err:
        previewer.preview(selfie, style, 1, 1, custom_prompt="Gucci jacket")
    assert err.value.field == "custom_prompt"
    with pytest.raises(PreviewRefused) as err:
        previewer.preview(b"garbage", style, 1, 1)
    assert err.value.field == "image"
    with pytest.raises(PreviewRefused) as err:
        previewer.preview(selfie, "no-such-style", 1, 1)
    assert err.value.field == "style_id"
