"""`python -m services.filter`: serves health until the filter issue fills the service in."""

from __future__ import annotations

from services.common.grpcserver import ServiceHost, run_service
from services.common.settings import ServiceSettings


async def main() -> None:
    settings = ServiceSettings(service_name="filter")
    if settings.grpc_port == 0:
        settings.grpc_port = 50053
    host = ServiceHost(settings)
    await host.run()


if __name__ == "__main__":
    run_service(main)
