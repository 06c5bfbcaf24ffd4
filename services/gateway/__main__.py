"""`python -m services.gateway`: serves health until the gateway issue fills the service in."""

from __future__ import annotations

from services.common.grpcserver import ServiceHost, run_service
from services.common.settings import ServiceSettings


async def main() -> None:
    settings = ServiceSettings(service_name="gateway")
    if settings.grpc_port == 0:
        settings.grpc_port = 50051
    host = ServiceHost(settings)
    await host.run()


if __name__ == "__main__":
    run_service(main)
