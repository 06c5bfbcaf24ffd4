"""`python -m services.trainer`: gRPC health + the jobs.train worker.

Start-up: the port opens (health NOT_SERVING until ready), then the heavy imports (torch,
diffusers, peft) and the face stack load, the bus and blob store connect, the worker
consumes. SIGTERM: NOT_SERVING, stop fetching, the running job checkpoints at its next
step and is handed back (nak) inside the grace period; a redelivery resumes from it.
"""

from __future__ import annotations

import asyncio
import logging

from services.common.grpc.server import ServiceHost, run_service
from services.common.resources import close_resources, open_worker_resources
from services.trainer.settings import TrainerSettings

log = logging.getLogger("services.trainer")


async def main() -> None:
    settings = TrainerSettings(service_name="trainer")
    if settings.grpc_port == 0:
        settings.grpc_port = 50054
    host = ServiceHost(settings)
    state: dict[str, object] = {}

    async def start() -> None:
        import torch

        from services.trainer.worker import TrainerWorker

        if settings.cpu_threads > 0:
            torch.set_num_threads(settings.cpu_threads)
        base = settings.base_model_path()
        if not (base / "model_index.json").is_file():
            raise FileNotFoundError(f"base model {base} is not a diffusers folder (make models)")
        res = await open_worker_resources(settings, "trainer", state)
        trainer = TrainerWorker(settings, res.blobs, res.bus, erased=res.erased)
        # Load the face stack now rather than inside the first job.
        await asyncio.to_thread(trainer._load_face_models)
        state.update(trainer=trainer, worker=trainer.worker())

    async def run_worker() -> None:
        worker = state["worker"]
        await worker.run()  # type: ignore[attr-defined]

    async def stop() -> None:
        trainer = state.get("trainer")
        if trainer is not None:
            trainer.request_stop()  # type: ignore[attr-defined]
        worker = state.get("worker")
        if worker is not None:
            grace = max(1.0, settings.shutdown_grace_seconds - 2)
            await worker.stop(drain=True, grace=grace)  # type: ignore[attr-defined]
        await close_resources(state)

    host.on_startup(start)
    host.background(run_worker)
    host.on_shutdown(stop)
    await host.run()


if __name__ == "__main__":
    run_service(main)
