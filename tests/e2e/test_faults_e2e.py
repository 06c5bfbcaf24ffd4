"""Faults, every service its own process: kill -9 a worker in the middle of its work,
restart nats-server in the middle of an order, and a job whose handler always crashes.

The kill and restart tests get a stack of their own (module scope: each test leaves it
healthy again); the poison-job test only hurts its own order, so it uses the shared stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from clients.sdk import HeadshotsClient, open_channel
from devstack.stack import Stack
from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import jobs_pb2
from tests.e2e.conftest import Gateway, start_stack
from tests.e2e.harness import (
    FAULT_ORDER_FIELDS,
    ORDER_FIELDS,
    ORDER_TIMEOUT_S,
    STAGE_SUBJECTS,
    arm_crash,
    candidate_blobs,
    dead_letters,
    describe,
    first_event,
    logs,
    ran_to_the_end,
)

pytestmark = pytest.mark.e2e

# How long a stage may take to report its first progress.
PROGRESS_TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("e2e-faults"))
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def fault_gateway(fault_stack: Stack) -> AsyncIterator[Gateway]:
    async with open_channel(fault_stack.procs["gateway"].addr) as channel:
        yield Gateway(fault_stack, channel)


def mid_work(event: jobs_pb2.OrderEvent) -> bool:
    """Some of the stage's work is done and some is not."""
    return event.total > 0 and 0 < event.done < event.total


async def start_order(gw: Gateway, photos: list[Path]) -> tuple[HeadshotsClient, pb.Order]:
    tenant, client = await gw.tenant("fault")
    order = await client.create_order(tenant, display_name="fault test", **FAULT_ORDER_FIELDS)
    upload = await client.upload_photos(order.name, photos)
    assert upload.stored.set_check.usable_count > 0, upload
    return client, order


async def assert_completed_once(stack: Stack, client: HeadshotsClient, order: pb.Order) -> None:
    """Ran to its end, each result listed once and stored once, no job dead-lettered."""
    final = await client.watch(order.name, within_s=ORDER_TIMEOUT_S)
    assert ran_to_the_end(final), describe(final) + "\n" + logs(stack)
    results, summary = await client.list_results(order.name, include_rejected=True)
    ids = [r.name.rsplit("/", 1)[-1] for r in results]
    assert len(ids) == len(set(ids)), f"results listed twice: {sorted(ids)}"
    assert summary.candidates == len(ids) >= FAULT_ORDER_FIELDS["candidate_count"]
    assert await candidate_blobs(stack, order.name) == sorted(ids)
    assert len({(r.style_id, r.seed) for r in results}) == len(results)
    dead = await dead_letters(stack, order.name)
    assert not dead, [(d.subject, d.reason) for d in dead]


@pytest.mark.parametrize("victim", ["trainer", "generator", "filter"])
async def test_kill_9_in_the_middle(
    fault_gateway: Gateway, obama_photos: list[Path], victim: str
) -> None:
    stack = fault_gateway.stack
    client, order = await start_order(fault_gateway, obama_photos)
    async with first_event(stack, STAGE_SUBJECTS[victim], order.name, mid_work) as progress:
        await client.submit(order.name)
        try:
            await asyncio.wait_for(progress, PROGRESS_TIMEOUT_S)
        except TimeoutError:
            now = await client.get_order(order.name)
            pytest.fail(f"{victim} never reported work in progress; {describe(now)}\n{logs(stack)}")
    stack.kill(victim)
    before = await client.get_order(order.name)
    assert before.state not in (pb.ORDER_STATE_READY, pb.ORDER_STATE_FAILED), describe(before)
    # A supervisor (Kubernetes) would restart it; the job it held comes back after AckWait.
    stack.restart(victim)
    await assert_completed_once(stack, client, order)


async def test_nats_restart_in_the_middle(fault_gateway: Gateway, obama_photos: list[Path]) -> None:
    stack = fault_gateway.stack
    assert stack.nats is not None
    client, order = await start_order(fault_gateway, obama_photos)
    async with first_event(stack, STAGE_SUBJECTS["trainer"], order.name, mid_work) as progress:
        await client.submit(order.name)
        await asyncio.wait_for(progress, PROGRESS_TIMEOUT_S)
    stack.nats.restart()
    await assert_completed_once(stack, client, order)


async def test_poison_job_is_dead_lettered_and_fails_the_order(
    shared_gateway: Gateway, obama_photos: list[Path]
) -> None:
    stack = shared_gateway.stack
    tenant, client = await shared_gateway.tenant("poison")
    order = await client.create_order(tenant, display_name="poison job", **ORDER_FIELDS)
    await client.upload_photos(order.name, obama_photos)
    arm_crash(stack, "jobs.train", order.name)
    await client.submit(order.name)
    final = await client.watch(order.name, within_s=ORDER_TIMEOUT_S)
    assert final.state == pb.ORDER_STATE_FAILED, describe(final) + "\n" + logs(stack)
    # The reason names what went wrong, not just "failed".
    assert "injected crash" in final.failure_reason or "deliveries" in final.failure_reason, (
        final.failure_reason
    )
    dead = await dead_letters(stack, order.name)
    assert [d.subject for d in dead] == ["jobs.train"], [(d.subject, d.reason) for d in dead]
    assert dead[0].deliveries >= 2 and "injected crash" in dead[0].reason, dead[0]
    # Nothing was produced for a job that never succeeded.
    assert await candidate_blobs(stack, order.name) == []
