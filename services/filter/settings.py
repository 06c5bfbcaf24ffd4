"""Filter settings (env prefix HS_FILTER_)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class FilterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HS_FILTER_", extra="ignore")

    # Folder with the face stack ONNX files and manifest.json (make models).
    face_models_dir: Path | None = None
    thresholds_file: Path | None = None
    # Images decoded and scored at once; bounded so a batch fits memory on a small node.
    score_batch: int = 16
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    concurrency: int = 2
    # Images worked on side by side, and the cores each model run uses: on CPU the small
    # face models gain ~1.2x from a second intra-op thread but 1.7x from a second image
    # (services/faces/parallel.py). Give the pod image_threads x intra_op_threads cores.
    image_threads: int = 2
    intra_op_threads: int = 1

    def models_path(self) -> Path:
        return self.face_models_dir or (self.models_dir / "face")
