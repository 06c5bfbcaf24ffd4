"""The embedded stack: PostgreSQL, nats-server and the five services as processes.

`python -m devstack.stack` starts everything on this machine (free ports, a run folder
under var/stack/), waits for every health check, prints where things are, and stops it
all cleanly on Ctrl-C or SIGTERM. `make demo` and the e2e tests use `Stack` directly.
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
import time
from dataclasses import dataclass, field
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

    def stop(self) -> dict[str, int]:
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

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        stack.start()
        print(json.dumps(stack.manifest(), indent=2), flush=True)
        print(f"stack ready in {stack.started_s:.1f}s; Ctrl-C stops everything", flush=True)
        while not stopping:
            time.sleep(0.2)
            for name, sp in stack.procs.items():
                if sp.proc is not None and sp.proc.poll() is not None:
                    print(f"{name} exited with {sp.proc.returncode}; stopping", file=sys.stderr)
                    stopping = True
    finally:
        codes = stack.stop()
        print(f"stopped: {codes}", flush=True)


if __name__ == "__main__":
    main()
