"""Every service answers health and reflection, and SIGTERM ends it inside its grace period."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from devstack.stack import SERVICES, Stack, health_status

pytestmark = pytest.mark.integration

EXPECTED = {
    "gateway": {"headshots.v1.HeadshotService", "headshots.v1.AdminService"},
    "generator": {"headshots.v1.GeneratorService"},
    "filter": {"headshots.v1.FilterService"},
    "retention": {"headshots.v1.RetentionService"},
    "trainer": set(),
}
GRACE_S = 15.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("stack"), extra_env={"HS_SHUTDOWN_GRACE_SECONDS": str(GRACE_S)}
    )
    s.start(timeout=180)
    yield s
    s.stop()


def listed_services(addr: str) -> set[str]:
    with grpc.insecure_channel(addr) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names: set[str] = set()
        for r in responses:
            names |= {s.name for s in r.list_services_response.service}
        return names


@pytest.mark.parametrize("name", SERVICES)
def test_health_and_reflection(stack: Stack, name: str) -> None:
    addr = stack.procs[name].addr
    assert health_status(addr) == health_pb2.HealthCheckResponse.SERVING
    listed = listed_services(addr)
    assert "grpc.health.v1.Health" in listed
    assert EXPECTED[name] <= listed, f"{name} does not serve {EXPECTED[name] - listed}"
    for service in EXPECTED[name]:
        assert health_status(addr, service) == health_pb2.HealthCheckResponse.SERVING


def test_sigterm_exits_cleanly_within_grace(stack: Stack, tmp_path: Path) -> None:
    for name in SERVICES:
        t0 = time.monotonic()
        code = stack.terminate(name, timeout=GRACE_S + 5)
        elapsed = time.monotonic() - t0
        assert code == 0, f"{name} exited with {code}"
        assert elapsed < GRACE_S, f"{name} took {elapsed:.1f}s to stop"
        assert health_status(stack.procs[name].addr) is None
