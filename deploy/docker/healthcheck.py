"""Container HEALTHCHECK for Docker and Compose: the service's gRPC health, overall status.

Kubernetes does not run this (it probes gRPC natively). Exit 0 only when SERVING.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    port = os.environ.get("HS_GRPC_PORT", "")
    if not port.isdigit():
        print(f"HS_GRPC_PORT is not a port: {port!r}", file=sys.stderr)
        return 1
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
        except grpc.RpcError as e:
            print(f"health check failed: {e.code().name}", file=sys.stderr)
            return 1
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"not serving: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
