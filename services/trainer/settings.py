"""Trainer settings (env prefix HS_TRAINER_).

The training options (rank, steps, learning rate, checkpoint choice, ...) are those of
`TrainConfig` (services/trainer/config.py), inherited here under the same names, so
`HS_TRAINER_RANK` sets `TrainConfig.rank`; this class adds what only the service needs:
where the models are, preprocessing, and the job queue.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings
from services.trainer.config import TrainConfig


class TrainerSettings(ServiceSettings, TrainConfig):
    model_config = SettingsConfigDict(env_prefix="HS_TRAINER_", extra="ignore")

    # A local diffusers folder (SD 1.5 or SDXL class). Empty: `<models_dir>/tiny-sd15`.
    base_model: Path | None = None
    # Recorded in the training result; empty: the base model folder's name.
    model_id: str = ""
    # Face stack (detector + identity) folder; empty: `<models_dir>/face`.
    face_models_dir: Path | None = None
    # torch threads on CPU; 0 leaves torch's default.
    cpu_threads: int = 0

    # Preprocessing. 0: the model's native resolution (UNet sample size x VAE factor).
    resolution: int = 0
    # Crop geometry as fractions of the crop side (head-and-shoulders, eyes level).
    eye_line: float = 0.40
    # Interocular distance / crop side for a frontal face ("head and shoulders").
    face_scale: float = 0.17
    # A photo whose face would be enlarged more than this to reach the crop is dropped.
    max_upscale: float = 4.0
    # Share of the crop allowed to fall outside the photo before it is dropped (the rest is
    # filled by replicating the border).
    max_outside: float = 0.30
    min_photos: int = 3

    # Jobs.
    ack_wait_s: float = 60.0
    max_deliver: int = 5

    def base_model_path(self) -> Path:
        return self.base_model or (self.models_dir / "tiny-sd15")

    def face_models_path(self) -> Path:
        return self.face_models_dir or (self.models_dir / "face")

    def resolved_model_id(self) -> str:
        return self.model_id or self.base_model_path().resolve().name
