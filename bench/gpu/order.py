"""One whole order on a GPU machine: wall time per stage and where the GPU waits.

Builds an SD1.5- or SDXL-architecture pipeline at full size with random weights
(models/full_config.py), starts the embedded stack on it (every service its own process,
the production code paths), runs one order through the public API and, meanwhile, samples
the GPU's utilisation with `nvidia-smi` every 100 ms. Reports the order's wall time, the
time in each state, the GPU-busy fraction, and the GPU-idle seconds by cause: the state
the order was in while the GPU had nothing to do (QUEUED: queue hops and model loads;
TRAINING/GENERATING: loads, adapter swap, encoding and uploads inside the stage;
FILTERING: scoring on the CPU). Writes bench/results/gpu_order.json.

    python bench/gpu/order.py --kind sd15 --candidates 400 --train-steps 1500
    python bench/gpu/order.py --tiny          # the same path on the tiny model, no GPU needed

Runs on CPU too (`--tiny`): utilisation is then reported as unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
BUSY_PERCENT = 5.0  # utilisation at or below this counts as idle


@dataclass
class GpuSampler:
    """`nvidia-smi` in loop mode; (monotonic time, utilisation %) per sample."""

    interval_ms: int = 100
    samples: list[tuple[float, float]] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None
    _thread: threading.Thread | None = None

    def start(self) -> bool:
        if shutil.which("nvidia-smi") is None:
            return False
        self._proc = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                f"-lms={self.interval_ms}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return True

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self.samples.append((time.monotonic(), float(line.split(",")[0])))
            except ValueError:
                continue

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)


def idle_by_state(
    samples: Sequence[tuple[float, float]],
    transitions: Sequence[tuple[float, str]],
    end: float,
    busy_percent: float = BUSY_PERCENT,
) -> dict[str, dict[str, float]]:
    """Seconds per order state, and of those the seconds the GPU was idle.

    `samples`: (time, utilisation %) in time order; `transitions`: (time, state entered) in
    time order; `end`: when the order ended. Each sample stands for the time until the next.
    """
    out: dict[str, dict[str, float]] = {}
    bounds = [*transitions, (end, "")]
    for (start, state), (stop, _) in pairwise(bounds):
        row = out.setdefault(state, {"seconds": 0.0, "idle_s": 0.0, "sampled_s": 0.0})
        row["seconds"] += max(0.0, stop - start)
    for (t, util), (t_next, _) in zip(samples, [*samples[1:], (end, 0.0)], strict=False):
        dt = max(0.0, min(t_next, end) - t)
        state = _state_at(t, transitions)
        if state is None or dt <= 0:
            continue
        row = out[state]
        row["sampled_s"] += dt
        if util <= busy_percent:
            row["idle_s"] += dt
    return {k: {n: round(v, 3) for n, v in row.items()} for k, row in out.items()}


def _state_at(t: float, transitions: Sequence[tuple[float, str]]) -> str | None:
    current = None
    for start, state in transitions:
        if start > t:
            break
        current = state
    return current


def _stack_env(kind: str, base: Path | None, steps: int, train_steps: int) -> dict[str, dict]:
    device = {"HS_TRAINER_DEVICE": "auto", "HS_GENERATOR_DEVICE": "auto"}
    trainer: dict[str, str] = {**device, "HS_TRAINER_STEPS": str(train_steps)}
    generator: dict[str, str] = {**device, "HS_GENERATOR_STEPS": str(steps)}
    if base is not None:
        trainer["HS_TRAINER_BASE_MODEL"] = str(base)
        generator["HS_GENERATOR_BASE_MODEL"] = str(base)
    return {"trainer": trainer, "generator": generator}


def run(ns: argparse.Namespace) -> dict[str, object]:
    from bench.bench_e2e import run_order
    from devstack.stack import Stack

    base = None
    if not ns.tiny:
        from models.full_config import build

        base = build(ns.kind, ROOT / "var" / "models" / f"full-{ns.kind}")
    token = os.urandom(16).hex()
    env = _stack_env(ns.kind, base, ns.steps, ns.train_steps)
    env.setdefault("gateway", {})["HS_GATEWAY_ADMIN_TOKEN"] = token
    sampler = GpuSampler()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-order-") as tmp:
        stack = Stack(Path(tmp), extra_env={"HS_LIMIT_MIN_PHOTOS": "4"}, service_env=env)
        try:
            stack.start(timeout=900)
            has_gpu = sampler.start()
            t0 = time.monotonic()
            doc = asyncio.run(run_order(stack, token, ns.photos, ns.candidates))
            end = time.monotonic()
        finally:
            sampler.stop()
            stack.stop()
    # The order's states, in the order first seen, at their offsets from the order's start.
    seen = doc.get("first_seen_s") or {}
    transitions = sorted((t0 + float(s), name) for name, s in dict(seen).items())
    doc["gpu"] = {
        "sampled": has_gpu,
        "busy_fraction": (
            round(sum(1 for _, u in sampler.samples if u > BUSY_PERCENT) / len(sampler.samples), 3)
            if sampler.samples
            else None
        ),
        "by_state": idle_by_state(sampler.samples, transitions, end) if has_gpu else None,
    }
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--tiny", action="store_true", help="tiny models (CPU is enough)")
    parser.add_argument("--candidates", type=int, default=400)
    parser.add_argument("--steps", type=int, default=25, help="sampling steps per image")
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument(
        "--photos", type=Path, default=ROOT / "tests" / "fixtures" / "faces" / "obama"
    )
    ns = parser.parse_args(argv)
    doc = run(ns)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gpu_order.json").write_text(json.dumps(doc, indent=2, default=str))
    print(json.dumps({k: doc[k] for k in ("state", "wall_s", "stage_s", "gpu")}, indent=2))
    return 0 if doc.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
