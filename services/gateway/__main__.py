"""`python -m services.gateway`: the public API (gRPC + REST), event consumer and reconciler."""

from __future__ import annotations

from services.common.grpc.server import run_service
from services.gateway.app import GatewayApp
from services.gateway.settings import GatewaySettings


async def main() -> None:
    settings = GatewaySettings(service_name="gateway")
    if settings.grpc_port == 0:
        settings.grpc_port = 50051
    await GatewayApp(settings).run()


if __name__ == "__main__":
    run_service(main)
