"""Shared by the face-stack unit tests: the built models (cached) and fixture photos."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from models.face_stack.build import build
from services.faces.face_stack import FaceStack
from services.faces.image_io import decode_image
from tests.conftest import FIXTURES, MODELS_DIR

FACE_MODELS = MODELS_DIR / "face"


@lru_cache(maxsize=1)
def built_models() -> Path:
    """var/models/face, built once if missing (the build is a no-op when it is cached)."""
    build(FACE_MODELS, fixtures=FIXTURES)
    return FACE_MODELS


@lru_cache(maxsize=1)
def face_stack() -> FaceStack:
    return FaceStack.load(built_models(), intra_op_threads=2)


@lru_cache(maxsize=64)
def photo(relative: str) -> np.ndarray:
    return decode_image((FIXTURES / relative).read_bytes())


def photos(folder: str) -> list[str]:
    return sorted(f"{folder}/{p.name}" for p in (FIXTURES / folder).glob("*.jpg"))
