"""The embedded stack's supervisor with real child processes: a killed child is restarted
after its backoff and the restart is logged; a child that keeps crashing makes it give up.
(The e2e outage test covers the same with the real services.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack.stack import GaveUp, ServiceProcess, Stack, Supervisor


class ScriptStack(Stack):
    """A stack whose "services" are small Python scripts (no gRPC, no models)."""

    scripts: dict[str, str]

    def start_service(self, name: str) -> None:
        sp = self.procs[name]
        sp.proc = subprocess.Popen([sys.executable, "-c", self.scripts[name]])


def stack_of(tmp_path: Path, **scripts: str) -> ScriptStack:
    stack = ScriptStack(tmp_path, services=tuple(scripts))
    stack.scripts = scripts
    for name in scripts:
        stack.procs[name] = ServiceProcess(name, 1, 1, tmp_path / f"{name}.log")
        stack.start_service(name)
    return stack


def run_until(supervisor: Supervisor, done: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, supervisor.lines
        supervisor.check()
        time.sleep(0.02)


def test_a_killed_service_is_restarted_after_its_backoff(tmp_path: Path) -> None:
    stack = stack_of(tmp_path, worker="import time; time.sleep(60)")
    said: list[str] = []
    supervisor = Supervisor(stack, first_backoff_s=0.3, say=said.append)
    try:
        first = stack.procs["worker"].proc
        assert first is not None
        first.send_signal(signal.SIGKILL)
        first.wait()
        t0 = time.monotonic()
        run_until(supervisor, lambda: supervisor.restarts.get("worker") == 1)
        assert time.monotonic() - t0 >= 0.3  # the backoff was kept
        again = stack.procs["worker"].proc
        assert again is not None and again.poll() is None and again.pid != first.pid
        assert any("worker exited with -9; restarting in 0.3s" in line for line in said), said
        assert (tmp_path / "supervisor.log").read_text().count("\n") == len(said) == 2
    finally:
        stack.kill("worker")


def test_a_crash_looping_service_makes_it_give_up(tmp_path: Path) -> None:
    stack = stack_of(tmp_path, broken="raise SystemExit(3)")
    supervisor = Supervisor(
        stack, first_backoff_s=0.01, max_backoff_s=0.05, max_crashes=3, say=lambda _: None
    )
    with pytest.raises(GaveUp, match="broken crashed 4 times"):
        run_until(supervisor, lambda: False)
    assert supervisor.restarts["broken"] == 3
    assert "exited with 3" in supervisor.lines[-1]
