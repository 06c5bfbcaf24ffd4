"""Twelve orders from three tenants at once: all complete, none leaks across tenants."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from clients.sdk import HeadshotsClient, OrderRun
from tests.e2e.conftest import Gateway
from tests.e2e.harness import describe, logs, ran_to_the_end

pytestmark = pytest.mark.e2e

TENANTS = 3
ORDERS_PER_TENANT = 4
# Small orders: the point is concurrency and isolation, not image count.
FIELDS: dict[str, object] = {"candidate_count": 4, "result_count": 1}
# Twelve trainings share two cores; the trainer takes them one or two at a time.
TIMEOUT_S = 420.0


async def test_twelve_orders_three_tenants(
    shared_gateway: Gateway, obama_photos: list[Path]
) -> None:
    tenants = [await shared_gateway.tenant(f"co{i}") for i in range(TENANTS)]
    photos = obama_photos

    async def one(tenant: str, client: HeadshotsClient, i: int) -> OrderRun:
        return await client.run_order(
            tenant, photos, within_s=TIMEOUT_S, display_name=f"{tenant} #{i}", **FIELDS
        )

    runs = await asyncio.gather(
        *(one(t, c, i) for t, c in tenants for i in range(ORDERS_PER_TENANT))
    )
    not_ready = [describe(r.order) for r in runs if not ran_to_the_end(r.order)]
    assert not not_ready, "\n".join(not_ready) + "\n" + logs(shared_gateway.stack)

    by_tenant: dict[str, set[str]] = {t: set() for t, _ in tenants}
    for r in runs:
        by_tenant[r.order.name.split("/orders/")[0]].add(r.order.name)
    assert all(len(v) == ORDERS_PER_TENANT for v in by_tenant.values()), by_tenant

    for (tenant, client), (other, _) in zip(tenants, tenants[1:] + tenants[:1], strict=True):
        # A tenant lists exactly its own orders...
        listed = {o.name for o in await client.list_orders(tenant)}
        assert listed == by_tenant[tenant]
        # ...and cannot list, read, watch or download another tenant's.
        theirs = sorted(by_tenant[other])[0]
        await expect_denied(client.list_orders(other))
        await expect_denied(client.get_order(theirs))
        await expect_denied(client.list_results(theirs))
        await expect_denied(client.watch(theirs, within_s=10))
        own = sorted(by_tenant[tenant])[0]
        mine, _ = await client.list_results(own, include_rejected=True)
        assert mine, f"{own} has no results"
        # The same result id under another tenant's order path is not found either.
        rid = mine[0].name.rsplit("/", 1)[-1]
        await expect_denied(client.download(f"{theirs}/results/{rid}"))


async def expect_denied(call: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    assert err.value.code() in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
    ), err.value
