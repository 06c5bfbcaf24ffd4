"""The crash injection the fault tests rely on does what it says, and nothing more: in a
separate process with the injection on the path, a job of a listed order crashes its
handler on every delivery and ends in DEADLETTER; a job of another order runs normally."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devstack.embedded import NatsServer
from tests.e2e.harness import FAULTINJECT, ROOT

pytestmark = pytest.mark.e2e

WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from headshots.v1 import jobs_pb2
    from services.common.bus.client import Bus
    from services.common.bus.consumer import Worker
    from services.common.bus.deadletter import list_dead_letters

    async def main(url):
        bus = await Bus.connect(url, "faultinject-test")
        await bus.ensure_streams()
        handled = []

        async def handler(ctx):
            handled.append(ctx.parse(jobs_pb2.TrainJob).order_id)

        worker = Worker(bus, "jobs.train", "trainer", handler, ack_wait=5, max_deliver=2)
        task = asyncio.create_task(worker.run())
        for order in ("poisoned", "healthy"):
            job = jobs_pb2.TrainJob(job_id=order + ":train", tenant_id="t", order_id=order)
            await bus.publish("jobs.train", job, msg_id=job.job_id)
        for _ in range(100):
            dead = await list_dead_letters(bus, "train")
            if dead and handled:
                break
            await asyncio.sleep(0.1)
        await worker.stop()
        await task
        for d in dead:
            print("DEAD", jobs_pb2.TrainJob.FromString(d.payload).order_id, d.deliveries, d.reason)
        print("HANDLED", *handled)
        await bus.close()

    asyncio.run(main(sys.argv[1]))
    """
)


def test_listed_order_crashes_and_is_dead_lettered(tmp_path: Path) -> None:
    crash_file = tmp_path / "crash.txt"
    crash_file.write_text("jobs.train poisoned\n")
    nats = NatsServer(tmp_path / "nats").start()
    try:
        env = {
            **os.environ,
            "HS_E2E_CRASH_FILE": str(crash_file),
            "PYTHONPATH": os.pathsep.join([str(FAULTINJECT), str(ROOT)]),
        }
        out = subprocess.run(
            [sys.executable, "-c", WORKER, nats.url],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        nats.stop()
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    dead = [line.split(maxsplit=3) for line in lines if line.startswith("DEAD")]
    assert [d[1] for d in dead] == ["poisoned"], out.stdout
    assert dead[0][2] == "2" and "injected crash" in dead[0][3], dead
    assert "HANDLED healthy" in lines, out.stdout
