"""`python -m services.generator`: the warm pipeline, Preview over gRPC, the jobs.generate worker.

Start-up order: load the base model (before the port reports SERVING, so a replica only
takes traffic once it is warm), connect to JetStream and the blob store, then consume.
SIGTERM: NOT_SERVING, stop fetching, let the running round finish within the grace period
or hand it back (nak); a redelivery resumes from the images already stored.
"""

from __future__ import annotations

import asyncio
import logging

from headshots.v1 import internal_pb2_grpc
from services.common.grpc.server import ServiceHost, run_service
from services.common.resources import close_resources, open_worker_resources
from services.generator.servicer import SERVICE_NAME, GeneratorServicer
from services.generator.settings import GeneratorSettings
from services.policy.styles import StyleCatalogue, platform_catalogue

log = logging.getLogger("services.generator")


async def main() -> None:
    settings = GeneratorSettings(service_name="generator")
    if settings.grpc_port == 0:
        settings.grpc_port = 50052
    host = ServiceHost(settings)
    state: dict[str, object] = {}

    catalogue: StyleCatalogue = platform_catalogue()

    servicer = GeneratorServicer()
    host.add(internal_pb2_grpc.add_GeneratorServiceServicer_to_server, servicer, SERVICE_NAME)

    async def start() -> None:
        # Heavy imports (diffusers, peft) only once the port is open.
        from services.generator.pipeline import WarmPipeline
        from services.generator.preview import Previewer
        from services.generator.worker import GeneratorWorker

        pipeline = await asyncio.to_thread(WarmPipeline.load, settings)
        res = await open_worker_resources(settings, "generator", state)
        gen = GeneratorWorker(settings, pipeline, res.blobs, res.bus, catalogue, erased=res.erased)
        state.update(worker=gen.worker())
        servicer.previewer = Previewer(settings, pipeline, catalogue)

    async def run_worker() -> None:
        worker = state["worker"]
        await worker.run()  # type: ignore[attr-defined]

    async def stop() -> None:
        worker = state.get("worker")
        if worker is not None:
            await worker.stop(drain=True, grace=settings.shutdown_grace_seconds - 2)  # type: ignore[attr-defined]
        await close_resources(state)

    host.on_startup(start)
    host.background(run_worker)
    host.on_shutdown(stop)
    await host.run()


if __name__ == "__main__":
    run_service(main)
