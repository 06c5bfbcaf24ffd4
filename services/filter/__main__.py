"""`python -m services.filter`: AnalyzeSelfies over gRPC and the `jobs.filter` worker.

Start-up: open the port (health NOT_SERVING), load the face stack and the identity model
once (shared by the gRPC servicer and the worker), migrate the filter schema, connect to
JetStream, then report SERVING and consume. SIGTERM: NOT_SERVING, the worker finishes the
batch in hand or hands it back; scores already written are not recomputed on redelivery.
"""

from __future__ import annotations

from headshots.v1 import internal_pb2_grpc
from services.common.grpc.server import ServiceHost, run_service
from services.filter.servicer import FilterServicer
from services.filter.settings import FilterSettings

SERVICE_NAME = "headshots.v1.FilterService"


async def main() -> None:
    settings = FilterSettings(service_name="filter")
    host = ServiceHost(settings, default_port=50053)
    servicer = FilterServicer()
    host.add(internal_pb2_grpc.add_FilterServiceServicer_to_server, servicer, SERVICE_NAME)

    async def start() -> None:
        from services.filter.app import start_filter

        await start_filter(host, settings, servicer)

    host.on_startup(start)
    await host.run()


if __name__ == "__main__":
    run_service(main)
