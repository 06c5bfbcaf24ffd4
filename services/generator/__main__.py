"""`python -m services.generator`: serves health until the generator issue fills the service in."""

from __future__ import annotations

from services.common.grpcserver import ServiceHost, run_service
from services.common.settings import ServiceSettings


async def main() -> None:
    settings = ServiceSettings(service_name="generator")
    if settings.grpc_port == 0:
        settings.grpc_port = 50052
    host = ServiceHost(settings)
    await host.run()


if __name__ == "__main__":
    run_service(main)
