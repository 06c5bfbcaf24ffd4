"""Shared fixtures: real servers, started once per session where that is safe."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.embedded import NatsServer, Postgres

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = (ROOT / "tests" / "fixtures" / "faces").resolve()
MODELS_DIR = Path(os.environ.get("HS_MODELS_DIR", ROOT / "var" / "models")).resolve()

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config: pytest.Config) -> None:
    # pgserver runs PostgreSQL as its own user and opens the folders above its data dir for
    # it; pytest's shared temp root is re-tightened to 0700 whenever another pytest session
    # starts on the machine, which would lock out a running test's server. A private base
    # temp folder per session is touched by no one else.
    if config.option.basetemp is None:
        config.option.basetemp = str(Path(tempfile.mkdtemp(prefix="headshots-pytest-")) / "t")


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
