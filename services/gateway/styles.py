"""The style presets a partner app can offer (ListStyles) and orders may name.

The generator renders them; the gateway only validates ids against this list. The prompts
use the instance token the trainer writes into `TrainingResult.instance_prompt` through
the `{subject}` placeholder.
"""

from __future__ import annotations

from headshots.v1 import headshots_pb2 as pb

STYLES: tuple[pb.Style, ...] = (
    pb.Style(
        id="corporate",
        display_name="Corporate",
        wardrobe="dark suit, white shirt",
        lighting="soft key light",
        background="blurred modern office",
        prompt="professional corporate headshot of {subject}, dark suit, soft key light, "
        "blurred modern office background, sharp focus",
        negative_prompt="cartoon, painting, deformed, blurry, extra fingers, text, watermark",
    ),
    pb.Style(
        id="studio",
        display_name="Studio grey",
        wardrobe="smart casual",
        lighting="three-point studio light",
        background="plain mid-grey backdrop",
        prompt="studio portrait of {subject}, smart casual, three-point lighting, "
        "plain grey backdrop, 85mm lens",
        negative_prompt="cartoon, painting, deformed, blurry, harsh shadows, text, watermark",
    ),
    pb.Style(
        id="outdoor",
        display_name="Outdoor natural light",
        wardrobe="casual jacket",
        lighting="golden hour daylight",
        background="park with trees, shallow depth of field",
        prompt="outdoor portrait of {subject}, casual jacket, golden hour light, "
        "trees in the background, shallow depth of field",
        negative_prompt="cartoon, painting, deformed, blurry, overexposed, text, watermark",
    ),
    pb.Style(
        id="creative",
        display_name="Creative colour",
        wardrobe="black turtleneck",
        lighting="coloured rim light",
        background="dark teal backdrop",
        prompt="creative portrait of {subject}, black turtleneck, teal and orange rim light, "
        "dark backdrop",
        negative_prompt="cartoon, deformed, blurry, text, watermark",
    ),
    pb.Style(
        id="casual",
        display_name="Casual bright",
        wardrobe="light sweater",
        lighting="bright window light",
        background="white wall",
        prompt="bright casual headshot of {subject}, light sweater, window light, white wall",
        negative_prompt="cartoon, painting, deformed, blurry, text, watermark",
    ),
)
STYLE_IDS = frozenset(s.id for s in STYLES)
