"""Where the gateway's REST server binds: the pod's address when gRPC binds it (the images and
manifests set HS_GRPC_HOST=0.0.0.0), loopback for a developer's process and the tests."""

from __future__ import annotations

import pytest

from services.gateway.settings import GatewaySettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HS_GRPC_HOST", "HS_GATEWAY_HTTP_HOST"):
        monkeypatch.delenv(name, raising=False)


def test_rest_stays_on_loopback_where_grpc_does() -> None:
    assert GatewaySettings().http_host == "127.0.0.1"


def test_rest_binds_the_pods_address_where_grpc_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_GRPC_HOST", "0.0.0.0")
    assert GatewaySettings().http_host == "0.0.0.0"


def test_an_explicit_rest_address_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_GRPC_HOST", "0.0.0.0")
    monkeypatch.setenv("HS_GATEWAY_HTTP_HOST", "127.0.0.1")
    assert GatewaySettings().http_host == "127.0.0.1"
