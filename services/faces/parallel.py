"""Several images worked on at once, each model run on one core, instead of one image at
a time with every core inside each run.

The face stack's models are small: on 2 CPU cores a CenterFace or mesh run is only ~1.2x
faster on two intra-op threads than on one, so a batch of candidates is scored 1.7x faster
(4.5 -> 7.7 images/s at 512², same verdicts) when two images go through the stack side by
side with one intra-op thread each (2-vCPU machine, 2026-12-02; bench/RESULTS.md).
onnxruntime sessions are safe to run from several threads, and every image is judged on its
own (the detector letterboxes each image alone), so splitting a batch changes no result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ImagePool:
    """Runs a batch function over interleaved parts of a batch on `workers` threads and puts
    the results back in the batch's order. `workers=1` runs in the caller's thread."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, "faces") if workers > 1 else None

    def map_batch(self, fn: Callable[[Sequence[T]], list[R]], items: Sequence[T]) -> list[R]:
        if self._pool is None or len(items) < 2:
            return fn(items)
        k = min(self.workers, len(items))
        parts = [list(items[i::k]) for i in range(k)]
        results = list(self._pool.map(fn, parts))
        out: list[R] = [None] * len(items)  # type: ignore[list-item]
        for i, part in enumerate(results):
            if len(part) != len(parts[i]):
                raise RuntimeError("a batch function must return one result per item")
            out[i::k] = part
        return out
