"""The style presets a partner app can offer (ListStyles) and orders may name.

One catalogue for the whole platform: the generator's `styles.yaml` (read by the
import-light `services.generator.styles`, yaml only). The gateway lists it and refuses an
order naming an unknown id before any GPU is spent; the generator renders the same ids.
`HS_STYLES_FILE` points both at another catalogue file.
"""

from __future__ import annotations

import os

from headshots.v1 import headshots_pb2 as pb
from services.generator.styles import load_catalogue

CATALOGUE = load_catalogue(os.environ.get("HS_STYLES_FILE") or None)
STYLES: tuple[pb.Style, ...] = tuple(s.to_pb() for s in CATALOGUE.styles)
STYLE_IDS = frozenset(CATALOGUE.ids())
