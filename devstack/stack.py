"""The embedded stack: PostgreSQL, nats-server and the five services as processes.

`python -m devstack.stack` starts everything on this machine (free ports, a run folder
under var/stack/), waits for every health check, prints where things are, and supervises
the services the way the kubelet does in a cluster: a service that exits is restarted after
a backoff (1 s, doubling to 30 s), with a line saying so; the stack stops on Ctrl-C or
SIGTERM, or when one service crashed more than 5 times in 2 minutes. `make demo` and the
e2e tests use `Stack` directly (`stack.supervise()` turns the same supervision on).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.embedded import NatsServer, Postgres, free_port

SERVICES = ("retention", "filter", "generator", "trainer", "gateway")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServiceProcess:
    name: str
    port: int
    metrics_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Stack:
    run_dir: Path
    services: tuple[str, ...] = SERVICES
    extra_env: dict[str, str] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    nats: NatsServer | None = None
    postgres: Postgres | None = None
    procs: dict[str, ServiceProcess] = field(default_factory=dict)
    http_port: int = 0
    database_url: str = ""
    master_key: str = ""
    supervisor: Supervisor | None = None

    def start(self, timeout: float = 120.0) -> Stack:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.postgres = Postgres(self.run_dir / "pg").start()
        self.database_url = self.postgres.url
        self.nats = NatsServer(self.run_dir / "nats").start()
        self.master_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.http_port = free_port()
        for name in self.services:
            self.procs[name] = ServiceProcess(
                name, free_port(), free_port(), self.run_dir / "logs" / f"{name}.log"
            )
        for name in self.services:
            self.start_service(name)
        self.wait_healthy(timeout=timeout)
        self.write_manifest()
        self.started_s = time.monotonic() - t0
        return self

    def env_for(self, name: str) -> dict[str, str]:
        assert self.nats is not None
        env = dict(os.environ)
        env.update(
            {
                "HS_SERVICE_NAME": name,
                "HS_GRPC_HOST": "127.0.0.1",
                "HS_GRPC_PORT": str(self.procs[name].port),
                "HS_METRICS_PORT": str(self.procs[name].metrics_port),
                "DATABASE_URL": self.database_url,
                "HS_NATS_URL": self.nats.url,
                "HS_BLOB_URL": f"file://{self.run_dir / 'blobs'}",
                "HS_MASTER_KEY": self.master_key,
                "HS_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": "1",
            }
        )
        for other in ("filter", "generator", "retention"):
            if other in self.procs:
                env[f"HS_{other.upper()}_ADDR"] = self.procs[other].addr
        if "gateway" in self.procs:
            env["HS_GATEWAY_HTTP_PORT"] = str(self.http_port)
        env.update(self.extra_env)
        env.update(self.service_env.get(name, {}))
        return env

    def start_service(self, name: str) -> None:
        sp = self.procs[name]
        sp.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = sp.log_path.open("ab")
        sp.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT,
            env=self.env_for(name),
            stdout=log,
            stderr=subprocess.STDOUT,
            # Ctrl-C reaches only the stack, which then stops the children in order.
            start_new_session=True,
        )

    def wait_healthy(self, names: tuple[str, ...] | None = None, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for name in names or tuple(self.procs):
            sp = self.procs[name]
            while True:
                exited = sp.proc is not None and sp.proc.poll() is not None
                if exited:
                    assert sp.proc is not None
                    raise RuntimeError(
                        f"{name} exited with {sp.proc.returncode} during start;"
                        f" log: {sp.log_path}\n" + tail(sp.log_path)
                    )
                if health_status(sp.addr) == health_pb2.HealthCheckResponse.SERVING:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{name} not healthy after {timeout}s; log: {sp.log_path}\n"
                        + tail(sp.log_path)
                    )
                time.sleep(0.1)

    def kill(self, name: str) -> None:
        """kill -9: the process gets no chance to clean up (fault tests)."""
        sp = self.procs[name]
        if sp.proc is not None:
            sp.proc.kill()
            sp.proc.wait()

    def restart(self, name: str, timeout: float = 120.0) -> None:
        self.start_service(name)
        self.wait_healthy((name,), timeout=timeout)

    def terminate(self, name: str, timeout: float = 60.0) -> int:
        sp = self.procs[name]
        assert sp.proc is not None
        sp.proc.send_signal(signal.SIGTERM)
        try:
            return sp.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            sp.proc.kill()
            sp.proc.wait()
            return -9

    def supervise(self, **options: object) -> Supervisor:
        """Restart services that exit, from a background thread, until `stop()`."""
        self.supervisor = Supervisor(self, **options)  # type: ignore[arg-type]
        self.supervisor.start_thread()
        return self.supervisor

    def stop(self) -> dict[str, int]:
        if self.supervisor is not None:
            self.supervisor.stop_thread()
        codes: dict[str, int] = {}
        # Gateway first (no new orders), workers next, storage last.
        for name in reversed(list(self.procs)):
            sp = self.procs[name]
            if sp.proc is not None and sp.proc.poll() is None:
                codes[name] = self.terminate(name)
            elif sp.proc is not None:
                codes[name] = sp.proc.returncode
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()
        return codes

    def manifest(self) -> dict[str, object]:
        assert self.nats is not None
        return {
            "run_dir": str(self.run_dir),
            "database_url": self.database_url,
            "nats_url": self.nats.url,
            "gateway": self.procs["gateway"].addr if "gateway" in self.procs else None,
            "rest": f"http://127.0.0.1:{self.http_port}",
            "services": {
                n: {
                    "addr": p.addr,
                    "metrics": f"http://127.0.0.1:{p.metrics_port}/metrics",
                    "log": str(p.log_path),
                }
                for n, p in self.procs.items()
            },
        }

    def write_manifest(self) -> None:
        (self.run_dir / "stack.json").write_text(json.dumps(self.manifest(), indent=2))


class GaveUp(RuntimeError):
    """A service crashed too often to keep restarting it."""


@dataclass
class Supervisor:
    """Restarts the stack's services when they exit: backoff `first_backoff_s`, doubling up
    to `max_backoff_s`; gives up (`GaveUp`) when one crashes more than `max_crashes` times
    within `window_s`. Every exit, restart and recovery is logged (stderr and
    `<run dir>/supervisor.log`)."""

    stack: Stack
    first_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_crashes: int = 5
    window_s: float = 120.0
    say: Callable[[str], None] | None = None
    restarts: dict[str, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    _crashes: dict[str, list[float]] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)
    _starting: set[str] = field(default_factory=set)
    _halt: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    gave_up: GaveUp | None = None

    def log(self, text: str) -> None:
        line = f"{datetime.now(UTC).isoformat(timespec='milliseconds')} supervisor: {text}"
        self.lines.append(line)
        with (self.stack.run_dir / "supervisor.log").open("a") as f:
            f.write(line + "\n")
        (self.say or (lambda t: print(t, file=sys.stderr, flush=True)))(line)

    def check(self) -> None:
        """One pass: notice exits, restart the services whose backoff is over, report the
        restarted ones that serve again. Raises `GaveUp`."""
        now = time.monotonic()
        for name, sp in self.stack.procs.items():
            if name in self._due:
                if now < self._due[name]:
                    continue
                del self._due[name]
                self.stack.start_service(name)
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self._starting.add(name)
                pid = sp.proc.pid if sp.proc else "?"
                self.log(f"{name} restarted (pid {pid}, restart {self.restarts[name]})")
            if sp.proc is None:
                continue
            code = sp.proc.poll()
            if code is None:
                if name in self._starting and health_status(sp.addr) == SERVING:
                    self._starting.discard(name)
                    self.log(f"{name} is serving again")
                continue
            self._starting.discard(name)
            recent = [t for t in self._crashes.get(name, []) if now - t < self.window_s]
            recent.append(now)
            self._crashes[name] = recent
            if len(recent) > self.max_crashes:
                self.log(f"{name} exited with {code}, {len(recent)} times in {self.window_s:g}s")
                raise GaveUp(f"{name} crashed {len(recent)} times in {self.window_s:g}s")
            delay = min(self.max_backoff_s, self.first_backoff_s * 2 ** (len(recent) - 1))
            self.log(
                f"{name} exited with {code}; restarting in {delay:g}s"
                f" (exit {len(recent)} in {self.window_s:g}s); log: {sp.log_path}"
            )
            self._due[name] = now + delay
            sp.proc = None

    def start_thread(self, interval_s: float = 0.2) -> None:
        def loop() -> None:
            while not self._halt.wait(interval_s):
                try:
                    self.check()
                except GaveUp as err:
                    self.gave_up = err
                    return

        self._thread = threading.Thread(target=loop, name="stack-supervisor", daemon=True)
        self._thread.start()

    def stop_thread(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


SERVING = health_pb2.HealthCheckResponse.SERVING


def health_status(addr: str, service: str = "") -> int | None:
    try:
        with grpc.insecure_channel(addr) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.0
            )
            return int(resp.status)
    except grpc.RpcError:
        return None


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=ROOT / "var" / "stack")
    ns = parser.parse_args()
    stack = Stack(ns.run_dir)
    stopping = False
    failed = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        stack.start()
        print(json.dumps(stack.manifest(), indent=2), flush=True)
        print(f"stack ready in {stack.started_s:.1f}s; Ctrl-C stops everything", flush=True)
        supervisor = Supervisor(stack)
        while not stopping:
            time.sleep(0.2)
            try:
                supervisor.check()
            except GaveUp as err:
                print(f"{err}; stopping", file=sys.stderr, flush=True)
                failed = stopping = True
    finally:
        codes = stack.stop()
        print(f"stopped: {codes}", flush=True)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
