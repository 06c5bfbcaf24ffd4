"""`python -m services.generator`: the warm pipeline, Preview over gRPC, the jobs.generate worker.

Start-up order: load the base model (before the port reports SERVING, so a replica only
takes traffic once it is warm), connect to JetStream and the blob store, then consume.
SIGTERM: NOT_SERVING, stop fetching, let the running round finish within the grace period
or hand it back (nak); a redelivery resumes from the images already stored.
"""

from __future__ import annotations

import asyncio
import logging
import os

from headshots.v1 import internal_pb2_grpc
from services.common.blobs import open_blob_store
from services.common.bus import Bus
from services.common.cancellation import ErasedOrders
from services.common.grpcserver import ServiceHost, run_service
from services.common.shutdown import close_resources
from services.generator.servicer import SERVICE_NAME, GeneratorServicer
from services.generator.settings import GeneratorSettings
from services.generator.styles import StyleCatalogue, load_catalogue

log = logging.getLogger("services.generator")


async def main() -> None:
    settings = GeneratorSettings(service_name="generator")
    if settings.grpc_port == 0:
        settings.grpc_port = 50052
    host = ServiceHost(settings)
    state: dict[str, object] = {}

    # HS_STYLES_FILE is the platform-wide catalogue (the gateway lists the same file).
    styles_file = settings.styles_file or os.environ.get("HS_STYLES_FILE")
    catalogue: StyleCatalogue = (
        StyleCatalogue.load(styles_file) if styles_file else load_catalogue()
    )

    servicer = GeneratorServicer()
    host.add(internal_pb2_grpc.add_GeneratorServiceServicer_to_server, servicer, SERVICE_NAME)

    async def start() -> None:
        # Heavy imports (diffusers, peft) only once the port is open.
        from services.generator.pipeline import WarmPipeline
        from services.generator.preview import Previewer
        from services.generator.worker import GeneratorWorker

        pipeline = await asyncio.to_thread(WarmPipeline.load, settings)
        engine = None
        if settings.master_key is not None:
            from services.common import db

            url, pg = await db.database_url(settings)
            state["pg"] = pg
            await db.migrate(url, "keyring")
            engine = db.create_engine(url)
            state["engine"] = engine
        blobs = open_blob_store(settings, engine=engine)
        bus = await Bus.connect(settings.nats_url, "generator")
        await bus.ensure_streams(replicas=settings.jetstream_replicas)
        erased = ErasedOrders(bus)
        await erased.start()
        gen = GeneratorWorker(settings, pipeline, blobs, bus, catalogue, erased=erased)
        state.update(bus=bus, erased=erased, worker=gen.worker())
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
