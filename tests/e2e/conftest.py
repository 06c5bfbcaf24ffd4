"""E2E fixtures: every service its own process over real PostgreSQL and NATS.

One shared stack serves the tests that do not kill anything (session scope, so it starts
once); tests that kill processes or restart NATS build their own in their module.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from clients.sdk import HeadshotsClient, OrderRun, open_channel
from devstack.stack import Stack
from tests.e2e.harness import (
    ADMIN_TOKEN,
    FACES,
    MODELS_DIR,
    ORDER_FIELDS,
    ORDER_TIMEOUT_S,
    make_stack,
)


@pytest.fixture(scope="session")
def obama_photos() -> list[Path]:
    folder = FACES / "obama"
    assert folder.is_dir(), f"fixtures missing at {folder}"
    return sorted(folder.glob("*.jpg"))


def require_models() -> None:
    missing = [p for p in (MODELS_DIR / "face", MODELS_DIR / "tiny-sd15") if not p.is_dir()]
    if missing:
        pytest.fail(f"models missing ({', '.join(map(str, missing))}); run `make models`")


def start_stack(run_dir: Path, **kwargs: object) -> Stack:
    require_models()
    stack = make_stack(run_dir, **kwargs)  # type: ignore[arg-type]
    try:
        stack.start(timeout=300)
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("e2e-shared")
    stack = start_stack(run_dir, otel_file=run_dir / "spans.jsonl")
    yield stack
    stack.stop()


@dataclass
class Gateway:
    """The admin side of one stack's gateway, able to mint tenants with keys."""

    stack: Stack
    channel: grpc.aio.Channel

    @property
    def admin(self) -> HeadshotsClient:
        return HeadshotsClient(self.channel, ADMIN_TOKEN)

    async def tenant(self, prefix: str = "t") -> tuple[str, HeadshotsClient]:
        name, secret = await self.admin.bootstrap_tenant(f"{prefix}-{uuid.uuid4().hex[:8]}")
        return name, self.admin.with_token(secret)


@pytest.fixture(scope="session")
async def shared_gateway(shared_stack: Stack) -> AsyncIterator[Gateway]:
    async with open_channel(shared_stack.procs["gateway"].addr) as channel:
        yield Gateway(shared_stack, channel)


@dataclass
class CompletedOrder:
    stack: Stack
    tenant: str
    client: HeadshotsClient
    run: OrderRun
    photos: list[Path]


@pytest.fixture(scope="session")
async def completed_order(shared_gateway: Gateway, obama_photos: list[Path]) -> CompletedOrder:
    """One order of the Obama selfies run to a terminal state (shared by the order and
    trace tests: an order is the expensive part)."""
    tenant, client = await shared_gateway.tenant("order")
    run = await client.run_order(
        tenant,
        obama_photos,
        within_s=ORDER_TIMEOUT_S,
        display_name="e2e full order",
        **ORDER_FIELDS,
    )
    return CompletedOrder(shared_gateway.stack, tenant, client, run, obama_photos)
