"""Shared fixtures: real servers, started once per session where that is safe."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.embedded import NatsServer, Postgres

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = (ROOT / "tests" / "fixtures" / "faces").resolve()
MODELS_DIR = Path(os.environ.get("HS_MODELS_DIR", ROOT / "var" / "models")).resolve()

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    assert FIXTURES.is_dir(), f"fixtures missing at {FIXTURES}"
    return FIXTURES


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS_DIR


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    pg = Postgres(tmp_path_factory.mktemp("pg")).start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()
