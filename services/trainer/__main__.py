"""`python -m services.trainer`: gRPC health + the jobs.train worker.

Start-up: the port opens (health NOT_SERVING until ready), then the heavy imports (torch,
diffusers, peft) and the face stack load, the bus and blob store connect, the worker
consumes. SIGTERM: NOT_SERVING, stop fetching, the running job checkpoints at its next
step and is handed back (nak) inside the grace period; a redelivery resumes from it.
"""

from __future__ import annotations

import asyncio

from services.common.grpc.server import ServiceHost, run_service
from services.common.resources import open_resources
from services.trainer.settings import TrainerSettings


async def main() -> None:
    settings = TrainerSettings(service_name="trainer")
    host = ServiceHost(settings, default_port=50054)

    async def start() -> None:
        import torch

        from services.trainer.worker import TrainerWorker

        if settings.cpu_threads > 0:
            torch.set_num_threads(settings.cpu_threads)
        if not (settings.base_model_path() / "model_index.json").is_file():
            raise FileNotFoundError(
                f"base model {settings.base_model_path()} is not a diffusers folder"
            )
        res = await host.enter(open_resources(settings, "trainer"))
        trainer = TrainerWorker(settings, res.blobs, res.bus, erased=res.erased)
        # Load the face stack now rather than inside the first job.
        await asyncio.to_thread(trainer._load_face_models)
        host.consume(trainer.worker(), before_stop=trainer.request_stop)

    host.on_startup(start)
    await host.run()


if __name__ == "__main__":
    run_service(main)
