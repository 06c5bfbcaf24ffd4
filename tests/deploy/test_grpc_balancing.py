"""Synchronous calls from the gateway spread over every replica of an internal service.

The gateway's channels to filter/generator/retention name a headless Service, which resolves
to every ready pod; with CLIENT_CHANNEL_OPTIONS (round_robin) the calls alternate between
them, where gRPC's default (pick_first) sends all of them to one pod. Two real servers from the
services' own bootstrap (ServiceHost) stand for two pods; a target listing both addresses
stands for the headless Service's DNS answer. Each server reports a different health status
for one name, so the answers show which server took each call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc.server import CLIENT_CHANNEL_OPTIONS, ServiceHost
from services.common.settings import ServiceSettings
from services.gateway.app import CHANNEL_OPTIONS

pytestmark = pytest.mark.integration
WHO = "which-replica"
CALLS = 24


@pytest.fixture
async def two_replicas() -> AsyncIterator[str]:
    hosts = []
    for status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.UNKNOWN):
        host = ServiceHost(
            ServiceSettings(service_name="filter", grpc_port=0, metrics_port=-1, log_level="ERROR")
        )
        await host.start()
        await host.health.set(WHO, status)
        hosts.append(host)
    yield "ipv4:" + ",".join(f"127.0.0.1:{h.port}" for h in hosts)
    for host in hosts:
        await host.server.stop(0)


async def _answers(target: str, options: list[tuple[str, object]]) -> Counter[int]:
    seen: Counter[int] = Counter()
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(CALLS):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=WHO), timeout=5)
            seen[reply.status] += 1
    return seen


async def test_round_robin_channels_spread_calls_over_every_replica(two_replicas: str) -> None:
    assert ("grpc.lb_policy_name", "round_robin") in CHANNEL_OPTIONS
    spread = await _answers(two_replicas, CHANNEL_OPTIONS)
    assert set(spread) == {
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.UNKNOWN,
    }
    assert min(spread.values()) >= CALLS // 2 - 1


async def test_without_round_robin_one_replica_takes_every_call(two_replicas: str) -> None:
    pick_first = [o for o in CLIENT_CHANNEL_OPTIONS if o[0] != "grpc.lb_policy_name"]
    assert len(await _answers(two_replicas, pick_first)) == 1
