"""Helpers for the JetStream and outbox tests: real servers, child processes to kill."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from services.common.bus.consumer import Worker

REPO = Path(__file__).resolve().parents[2]


async def wait_until(pred: Callable[[], bool], within: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or pred}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(worker: Worker, *, drain: bool = False) -> AsyncIterator[Worker]:
    """Run a worker for the duration of the block; stop it after (without draining unless
    `drain`)."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        await worker.stop(drain=drain)
        # A drain may take the worker's whole shutdown grace.
        await asyncio.wait_for(task, 10 + (worker.shutdown_grace if drain else 0))


def spawn_python(code: str, *args: str) -> subprocess.Popen[str]:
    """A child Python process running `code` from the repo root (to be killed by the test)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_hard(proc: subprocess.Popen[str]) -> None:
    """SIGKILL: no cleanup, no acks, no rollback from the client side."""
    proc.kill()
    proc.wait(timeout=10)
