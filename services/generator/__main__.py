"""`python -m services.generator`: the warm pipeline, Preview over gRPC, the jobs.generate worker.

Start-up order: load the base model (before the port reports SERVING, so a replica only
takes traffic once it is warm), connect to JetStream and the blob store, then consume.
SIGTERM: NOT_SERVING, stop fetching, let the running round finish within the grace period
or hand it back (nak); a redelivery resumes from the images already stored.
"""

from __future__ import annotations

import asyncio

from headshots.v1 import internal_pb2_grpc
from services.common.grpc.server import ServiceHost, run_service
from services.common.resources import open_resources
from services.generator.servicer import SERVICE_NAME, GeneratorServicer
from services.generator.settings import GeneratorSettings
from services.policy.styles import platform_catalogue


async def main() -> None:
    settings = GeneratorSettings(service_name="generator")
    host = ServiceHost(settings, default_port=50052)
    servicer = GeneratorServicer()
    host.add(internal_pb2_grpc.add_GeneratorServiceServicer_to_server, servicer, SERVICE_NAME)

    async def start() -> None:
        # Heavy imports (diffusers, peft) only once the port is open.
        from services.generator.pipeline import WarmPipeline
        from services.generator.preview import Previewer
        from services.generator.worker import GeneratorWorker

        catalogue = platform_catalogue()
        pipeline = await asyncio.to_thread(WarmPipeline.load, settings)
        res = await host.enter(open_resources(settings, "generator"))
        gen = GeneratorWorker(settings, pipeline, res.blobs, res.bus, catalogue, erased=res.erased)
        servicer.previewer = Previewer(settings, pipeline, catalogue)
        host.consume(gen.worker())

    host.on_startup(start)
    await host.run()


if __name__ == "__main__":
    run_service(main)
