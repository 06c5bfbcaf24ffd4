"""Training state that survives the process: save every M steps, resume on redelivery.

One blob per order (`checkpoints/train-state.pt`), overwritten in place: the store's puts
are atomic (temp file + rename, or one S3 PUT), so a kill -9 mid-write leaves the previous
state. The state holds the LoRA weights, the optimiser and LR-schedule state, the step, the
loss history and the best checkpoint so far (weights + score), so a resumed run continues
exactly where it stopped and still knows which checkpoint to keep. Per-step randomness is
derived from (seed, step), so a resumed run draws the same noise as an uninterrupted one.

Serialised with `torch.save` and read back with `torch.load(weights_only=True)`: only
tensors and plain containers, never pickled code from the blob store.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

log = logging.getLogger(__name__)

STATE_NAME = "train-state.pt"
FORMAT = 1
T = TypeVar("T")


@dataclass
class TrainingState:
    step: int
    total_steps: int
    lora: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    lr_scheduler: dict[str, Any]
    losses: list[float] = field(default_factory=list)
    # Best checkpoint so far per metric ("likeness", "validation_loss"): {"step": int,
    # "score": float (higher is better), "lora": weights}. Which metric decides is known
    # only at the end (likeness needs faces in the renders), so both are kept.
    best: dict[str, dict[str, Any]] = field(default_factory=dict)
    validations: list[dict[str, float]] = field(default_factory=list)
    # What the state was trained for: a resume with another config starts over.
    fingerprint: str = ""
    batch_size: int = 1
    grad_accumulation: int = 1

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"format": FORMAT, **self.__dict__}, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainingState:
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(raw, dict) or raw.pop("format", None) != FORMAT:
            raise ValueError("not a training state of this trainer version")
        return cls(**raw)


class CheckpointStore(Protocol):
    def save(self, state: TrainingState) -> None: ...

    def load(self) -> TrainingState | None: ...

    def clear(self) -> None: ...


class MemoryCheckpointStore:
    """In-process store (tests, the bench)."""

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.saves = 0

    def save(self, state: TrainingState) -> None:
        self.data = state.to_bytes()
        self.saves += 1

    def load(self) -> TrainingState | None:
        return TrainingState.from_bytes(self.data) if self.data else None

    def clear(self) -> None:
        self.data = None


class BlobCheckpointStore:
    """The order's checkpoint in the blob store. The training loop runs in a worker thread;
    the (async) store calls are run on the service's event loop and waited for."""

    def __init__(self, blobs: Any, key: str, loop: asyncio.AbstractEventLoop) -> None:
        self.blobs = blobs
        self.key = key
        self.loop = loop
        self.saves = 0

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 300.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def save(self, state: TrainingState) -> None:
        self._call(self.blobs.put(self.key, state.to_bytes(), "application/octet-stream"))
        self.saves += 1

    def load(self) -> TrainingState | None:
        from services.common.storage.base import BlobNotFound

        try:
            data = self._call(self.blobs.get(self.key))
        except BlobNotFound:
            return None
        try:
            return TrainingState.from_bytes(data)
        except Exception as err:  # a damaged state costs a restart, not the order
            log.warning("checkpoint %s unreadable, starting over: %r", self.key, err)
            return None

    async def aload(self) -> TrainingState | None:
        """`load` for callers on the event loop."""
        return await asyncio.to_thread(self.load)

    def clear(self) -> None:
        self._call(self.blobs.delete(self.key))
