"""`python -m services.retention`: erasure API, lifecycle consumer and the deletion sweeper."""

from __future__ import annotations

from headshots.v1 import internal_pb2_grpc
from services.common.grpc.server import ServiceHost, run_service
from services.retention.servicer import RetentionServicer
from services.retention.settings import RetentionSettings


async def main() -> None:
    settings = RetentionSettings(service_name="retention")
    host = ServiceHost(settings, default_port=50055)
    servicer = RetentionServicer()
    host.add(
        internal_pb2_grpc.add_RetentionServiceServicer_to_server,
        servicer,
        "headshots.v1.RetentionService",
    )

    async def start() -> None:
        from services.retention.app import start_retention

        await start_retention(host, settings, servicer)

    host.on_startup(start)
    await host.run()


if __name__ == "__main__":
    run_service(main)
