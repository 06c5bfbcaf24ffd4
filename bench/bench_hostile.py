"""The gateway under a hostile mix: peak memory and normal-upload latency while attacked.

Starts PostgreSQL, nats-server, the gateway's neighbours (the filter servicer with the
harness's rule analyser, a preview double, retention) in one child process and the real
gateway (`python -m services.gateway`) in another, then, concurrently and on loopback only:

- decompression bombs: small JPEGs whose header claims 7000×7000 (complete, and truncated
  to a header and a few KB), uploaded and sent to CreatePreview;
- one UploadPhotos call with 30 photos of ~19.9 MB each (a real face with padding after
  the end-of-image marker, so each one decodes);
- failed-authentication floods over REST from other loopback addresses (127.0.0.2, .3):
  wrong admin tokens and well-formed tenant keys with wrong secrets;
- a normal client: one real selfie per UploadPhotos call into a fresh order, one after
  another, over gRPC from 127.0.0.1.

Reports the gateway's peak RSS (VmHWM from /proc, the kernel's own high-water mark) and
resident size before the attack, the p50/p99 latency of the normal uploads while under
attack (and alone, before it), and what the attackers got back. Bounded in count and time.
Prints a table and writes bench/results/hostile.json.

    python bench/bench_hostile.py [--label before|after] [--bombs 12] [--floods 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import http.client
import io
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from PIL import Image  # noqa: E402

from devstack.embedded import NatsServer, Postgres, free_port, wait_for_port  # noqa: E402
from headshots.v1 import headshots_pb2 as pb  # noqa: E402
from headshots.v1 import headshots_pb2_grpc as pb_grpc  # noqa: E402

RESULTS = ROOT / "bench" / "results"
FACES = ROOT / "tests" / "fixtures" / "faces"
CHUNK = 1024 * 1024


# ------------------------------------------------------------------------------ payloads


def bomb_jpeg(side: int = 7000) -> bytes:
    """A complete JPEG of one flat colour: tiny on disk, side×side pixels when decoded."""
    out = io.BytesIO()
    Image.new("L", (side, side), 128).save(out, "JPEG", quality=1)
    return out.getvalue()


def truncated_bomb(full: bytes, keep: int = 28 * 1024) -> bytes:
    return full[:keep]


def padded_face(size: int) -> bytes:
    """A real selfie followed by random bytes up to `size` (ignored after the EOI marker)."""
    face = sorted((FACES / "obama").glob("*.jpg"))[0].read_bytes()
    return face + secrets.token_bytes(max(0, size - len(face)))


def selfie_files() -> list[bytes]:
    return [p.read_bytes() for p in sorted((FACES / "obama").glob("*.jpg"))]


def upload_stream(parent: str, files: list[tuple[str, bytes]]):
    async def gen():
        first = True
        for name, data in files:
            view = memoryview(data)
            for start in range(0, max(1, len(data)), CHUNK):
                msg = pb.UploadPhotosRequest(data=bytes(view[start : start + CHUNK]))
                if start == 0:
                    msg.filename = name
                if first:
                    msg.parent, first = parent, False
                yield msg

    return gen()


# ------------------------------------------------------------------------------ processes


def serve_neighbours(database_url: str, blob_url: str, master: str, port_file: str) -> None:
    """Child process: the gateway's neighbours on one loopback gRPC server."""
    from services.common.db import engine as db
    from services.common.keys.keyring import Keyring, load_master_key
    from services.common.storage.factory import open_blob_store
    from services.gateway.settings import GatewaySettings
    from tests.support.gateway_harness import start_neighbours

    async def main() -> None:
        settings = GatewaySettings(
            service_name="neighbours", database_url=database_url, blob_url=blob_url,
            master_key=master,
        )  # fmt: skip
        await db.migrate(database_url, "keyring")
        engine = db.create_engine(database_url)
        blobs = open_blob_store(settings, engine=engine)
        keyring = Keyring(engine, load_master_key(settings), settings.master_key_id)
        neighbours = await start_neighbours(database_url, blobs, keyring)
        await asyncio.to_thread(Path(port_file).write_text, str(neighbours.port))
        await neighbours.server.wait_for_termination()

    asyncio.run(main())


class Rss:
    """The gateway's resident size, sampled; its peak from the kernel's VmHWM."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def field(self, name: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def reset_peak(self) -> None:
        # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.samples.append((time.monotonic(), self.field("VmRSS")))
            except (OSError, ValueError):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------ attackers


def rest_flood(port: int, source: str, n: int, kind: str, out: collections.Counter) -> None:
    """`n` calls with bad credentials over REST from loopback address `source`."""
    conn: http.client.HTTPConnection | None = None
    for i in range(n):
        method, body = "GET", None
        if kind == "admin":
            path, token = "/v1/tenants?tenantId=x-1", "wrong-admin-" + secrets.token_hex(8)
            method, body = "POST", json.dumps({"displayName": "x"})
        else:
            key_id = secrets.token_hex(6)
            raw = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
            path, token = "/v1/tenants/t-x/orders", f"hs_{key_id}_{raw}"
        try:
            if conn is None:
                conn = http.client.HTTPConnection(
                    "127.0.0.1", port, timeout=30, source_address=(source, 0)
                )
            headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            out[f"{kind} {resp.status}"] += 1
        except OSError as err:
            out[f"{kind} error {type(err).__name__}"] += 1
            conn = None
        del i
    if conn is not None:
        conn.close()


async def normal_client(
    api: pb_grpc.HeadshotServiceStub,
    md: tuple[tuple[str, str], ...],
    tenant: str,
    photos: list[bytes],
    until: asyncio.Event,
    latencies: list[float],
    outcomes: collections.Counter,
    max_calls: int,
) -> None:
    i = 0
    while not until.is_set() and i < max_calls:
        order = await api.CreateOrder(
            pb.CreateOrderRequest(parent=f"tenants/{tenant}", order=pb.Order()), metadata=md
        )
        data = photos[i % len(photos)]
        t0 = time.perf_counter()
        try:
            await api.UploadPhotos(
                upload_stream(order.name, [(f"selfie-{i}.jpg", data)]), metadata=md, timeout=120
            )
            outcomes["OK"] += 1
        except grpc.aio.AioRpcError as err:
            outcomes[err.code().name] += 1
        latencies.append(time.perf_counter() - t0)
        await api.DeleteOrder(pb.DeleteOrderRequest(name=order.name), metadata=md)
        i += 1


async def bomb_calls(
    api: pb_grpc.HeadshotServiceStub,
    md: tuple[tuple[str, str], ...],
    tenant: str,
    bombs: list[bytes],
    outcomes: collections.Counter,
) -> None:
    async def one(i: int, data: bytes) -> None:
        try:
            if i % 2 == 0:
                order = await api.CreateOrder(
                    pb.CreateOrderRequest(parent=f"tenants/{tenant}", order=pb.Order()),
                    metadata=md,
                )
                await api.UploadPhotos(
                    upload_stream(order.name, [(f"bomb-{i}.jpg", data)]), metadata=md, timeout=120
                )
            else:
                await api.CreatePreview(
                    pb.CreatePreviewRequest(parent=f"tenants/{tenant}", photo=data, count=1),
                    metadata=md,
                    timeout=120,
                )
            outcomes["bomb OK"] += 1
        except grpc.aio.AioRpcError as err:
            outcomes[f"bomb {err.code().name}"] += 1

    await asyncio.gather(*(one(i, d) for i, d in enumerate(bombs)))


async def big_upload(
    api: pb_grpc.HeadshotServiceStub,
    md: tuple[tuple[str, str], ...],
    tenant: str,
    count: int,
    size: int,
    outcomes: collections.Counter,
) -> float:
    order = await api.CreateOrder(
        pb.CreateOrderRequest(parent=f"tenants/{tenant}", order=pb.Order()), metadata=md
    )
    data = padded_face(size)
    t0 = time.perf_counter()
    try:
        await api.UploadPhotos(
            upload_stream(order.name, [(f"big-{i}.jpg", data) for i in range(count)]),
            metadata=md,
            timeout=300,
        )
        outcomes["big OK"] += 1
    except grpc.aio.AioRpcError as err:
        outcomes[f"big {err.code().name}"] += 1
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------ main


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def attack(ns: argparse.Namespace, grpc_port: int, http_port: int, admin: str, rss: Rss):
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{grpc_port}", options=[("grpc.max_receive_message_length", 64 * 2**20)]
    )
    admin_md = (("authorization", f"Bearer {admin}"),)
    admin_api = pb_grpc.AdminServiceStub(channel)
    api = pb_grpc.HeadshotServiceStub(channel)

    async def tenant(prefix: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        tid = f"{prefix}-{secrets.token_hex(3)}"
        await admin_api.CreateTenant(
            pb.CreateTenantRequest(tenant_id=tid, tenant=pb.Tenant(display_name=prefix)),
            metadata=admin_md,
        )
        key = await admin_api.CreateApiKey(
            pb.CreateApiKeyRequest(parent=f"tenants/{tid}"), metadata=admin_md
        )
        return tid, (("authorization", f"Bearer {key.secret}"),)

    normal_tenant, normal_md = await tenant("normal")
    evil_tenant, evil_md = await tenant("evil")
    photos = selfie_files()

    # Alone: the normal client's latency without an attack (also warms every code path).
    quiet: list[float] = []
    quiet_out: collections.Counter = collections.Counter()
    done = asyncio.Event()
    await normal_client(api, normal_md, normal_tenant, photos, done, quiet, quiet_out, ns.quiet)
    base_rss = rss.field("VmRSS")
    rss.reset_peak()
    t_attack = time.monotonic()

    loud: list[float] = []
    loud_out: collections.Counter = collections.Counter()
    attack_out: collections.Counter = collections.Counter()
    full = bomb_jpeg()
    bombs = [full if i % 2 == 0 else truncated_bomb(full) for i in range(ns.bombs)]
    flood_threads = [
        threading.Thread(
            target=rest_flood, args=(http_port, src, ns.floods, kind, attack_out), daemon=True
        )
        for src, kind in (("127.0.0.2", "admin"), ("127.0.0.3", "tenant-key"))
    ]
    for t in flood_threads:
        t.start()
    stop_normal = asyncio.Event()
    normal = asyncio.create_task(
        normal_client(api, normal_md, normal_tenant, photos, stop_normal, loud, loud_out, 10_000)
    )
    attackers = asyncio.gather(
        bomb_calls(api, evil_md, evil_tenant, bombs, attack_out),
        big_upload(api, evil_md, evil_tenant, ns.big_count, ns.big_size, attack_out),
        asyncio.to_thread(lambda: [t.join() for t in flood_threads]),
    )
    try:
        async with asyncio.timeout(ns.max_seconds):
            results = await attackers
    except TimeoutError:
        results = [None, float("nan"), None]
        attack_out["attack timed out"] += 1
    attack_s = time.monotonic() - t_attack
    stop_normal.set()
    await normal
    peak = rss.field("VmHWM")
    await channel.close()
    return {
        "bomb_bytes": {"complete": len(full), "truncated": len(bombs[1]) if ns.bombs > 1 else 0},
        "rss_before_attack_mib": base_rss / 2**20,
        "peak_rss_mib": peak / 2**20,
        "attack_s": attack_s,
        "big_upload_s": results[1],
        "normal_alone": {
            "calls": len(quiet),
            "p50_s": pct(quiet, 0.5),
            "p99_s": pct(quiet, 0.99),
            "outcomes": dict(quiet_out),
        },
        "normal_under_attack": {
            "calls": len(loud),
            "p50_s": pct(loud, 0.5),
            "p99_s": pct(loud, 0.99),
            "max_s": max(loud, default=float("nan")),
            "outcomes": dict(loud_out),
        },
        "attackers": dict(sorted(attack_out.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="")
    parser.add_argument("--bombs", type=int, default=12)
    parser.add_argument("--floods", type=int, default=1000, help="bad-auth calls per flood")
    parser.add_argument("--big-count", type=int, default=30)
    parser.add_argument("--big-size", type=int, default=19_900_000)
    parser.add_argument("--quiet", type=int, default=8, help="normal uploads before the attack")
    parser.add_argument("--max-seconds", type=float, default=240.0)
    parser.add_argument("--serve-neighbours", nargs=4, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.serve_neighbours:
        serve_neighbours(*ns.serve_neighbours)
        return

    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hs-hostile-") as tmp_s:
        tmp = Path(tmp_s)
        pg = Postgres(tmp / "pg").start()
        nats = NatsServer(tmp / "nats").start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            master = base64.b64encode(secrets.token_bytes(32)).decode()
            blob_url = f"file://{tmp / 'blobs'}"
            env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
            port_file = tmp / "neighbours.port"
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--serve-neighbours",
                        pg.url,
                        blob_url,
                        master,
                        str(port_file),
                    ],
                    cwd=ROOT,
                    env=env,
                )
            )
            deadline = time.monotonic() + 60
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    raise SystemExit("the neighbours did not start")
                time.sleep(0.1)
            neighbours = f"127.0.0.1:{port_file.read_text()}"
            grpc_port, http_port = free_port(), free_port()
            admin = secrets.token_urlsafe(24)
            gw_env = {
                **env,
                "DATABASE_URL": pg.url,
                "HS_NATS_URL": nats.url,
                "HS_BLOB_URL": blob_url,
                "HS_MASTER_KEY": master,
                "HS_GRPC_PORT": str(grpc_port),
                "HS_METRICS_PORT": "-1",
                "HS_LOG_LEVEL": "WARNING",
                "HS_LOG_FORMAT": "text",
                "HS_FILTER_ADDR": neighbours,
                "HS_GENERATOR_ADDR": neighbours,
                "HS_RETENTION_ADDR": neighbours,
                "HS_GATEWAY_HTTP_PORT": str(http_port),
                "HS_GATEWAY_ADMIN_TOKEN": admin,
                "HS_GATEWAY_KEY_PEPPER": secrets.token_hex(16),
                "HS_GATEWAY_MAX_ORDERS_IN_FLIGHT": "100000",
                "HS_GATEWAY_REQUESTS_PER_MINUTE": "100000",
            }
            gateway = subprocess.Popen(
                [sys.executable, "-m", "services.gateway"], cwd=ROOT, env=gw_env
            )
            procs.append(gateway)
            wait_for_port("127.0.0.1", grpc_port, timeout=60)
            wait_for_port("127.0.0.1", http_port, timeout=60)
            rss = Rss(gateway.pid)
            rss.start()
            result = asyncio.run(attack(ns, grpc_port, http_port, admin, rss))
            rss.stop()
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in reversed(procs):
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            nats.stop()
            pg.stop()

    doc = {
        "label": ns.label,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "mix": {
            "bombs": ns.bombs,
            "bad_auth_calls": 2 * ns.floods,
            "big_upload": f"{ns.big_count} x {ns.big_size / 1e6:.1f} MB in one call",
        },
        **result,
    }
    doc["summary"] = {
        "peak_rss_mib": round(result["peak_rss_mib"], 1),
        "rss_before_attack_mib": round(result["rss_before_attack_mib"], 1),
        "normal_p99_under_attack_s": round(result["normal_under_attack"]["p99_s"], 3),
        "normal_p99_alone_s": round(result["normal_alone"]["p99_s"], 3),
    }
    name = f"hostile-{ns.label}" if ns.label else "hostile"
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2, default=str))
    rows = [
        ("gateway RSS before the attack", f"{result['rss_before_attack_mib']:.0f} MiB"),
        ("gateway peak RSS under attack", f"{result['peak_rss_mib']:.0f} MiB"),
        ("attack duration", f"{result['attack_s']:.1f} s"),
        ("30 big photos, one call", f"{result['big_upload_s']:.1f} s"),
    ]
    for key in ("normal_alone", "normal_under_attack"):
        r = result[key]
        rows.append(
            (f"{key.replace('_', ' ')}: p50 / p99 ({r['calls']} calls)",
             f"{r['p50_s']:.3f} / {r['p99_s']:.3f} s  {r['outcomes']}")
        )  # fmt: skip
    for what, count in result["attackers"].items():
        rows.append((f"attacker: {what}", str(count)))
    width = max(len(a) for a, _ in rows)
    print(f"\nhostile mix{' (' + ns.label + ')' if ns.label else ''}")
    for a, b in rows:
        print(f"  {a:<{width}}  {b}")


if __name__ == "__main__":
    main()
