"""The operator guide's install path (deploy/README.md), tried step by step on this machine.

Real PostgreSQL (pgserver) and nats-server stand in for the cluster's; everything else comes
from the rendered gpu overlay: the setup Job's commands and environment, the gateway
Deployment's command and environment (ConfigMap + env; Secrets filled with test values),
and the roles SQL from the guide itself. Only what cannot exist here is substituted: the
database and NATS addresses, the blob store (a folder), ports (free ones: the machine is
shared) and JetStream replicas (one server here, three in the cluster).

Then the gateway is reached the way a Service reaches a pod: on this machine's own
non-loopback address, over gRPC (health, AdminService with the admin token from the Secret)
and REST (the liveness probe's path, and the tenant API with the key the bootstrap command
printed).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import nats
import pytest
import sqlalchemy as sa
from conftest import DEPLOY, ROOT, Doc, Manifests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from devstack.embedded import NatsServer, Postgres
from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import headshots_pb2_grpc as pb_grpc
from services.common.db.migrate import SchemaNotReady, prepare_schemas
from services.common.db.naming import normalize_url
from services.common.ports import free_port
from services.common.settings import ServiceSettings
from services.gateway.bootstrap import EXIT_EXISTS, BootstrapError, create_tenant
from services.gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

OWNER, APP = "headshots", "headshots_app"
BOOTSTRAP = (sys.executable, "-m", "services.gateway.bootstrap")
SIOCGIFADDR = 0x8915


# ------------------------------------------------------------------ this machine's address


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of a non-loopback interface of this machine, or None."""
    for _, name in socket.if_nameindex():
        if name == "lo":
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                packed = fcntl.ioctl(
                    s.fileno(), SIOCGIFADDR, struct.pack("256s", name[:15].encode())
                )
            except OSError:
                continue  # interface without an IPv4 address
        address = socket.inet_ntoa(packed[20:24])
        if not address.startswith("127."):
            return address
    return None


# ------------------------------------------------------------------ the guide's pieces


def guide_sql() -> list[str]:
    """The statements of the guide's roles-and-database block (```sql ... -- headshots:)."""
    text = (DEPLOY / "README.md").read_text()
    match = re.search(r"```sql\n(-- headshots: roles.*?)```", text, re.S)
    assert match, "deploy/README.md has no `-- headshots: roles` SQL block"
    body = "\n".join(
        line for line in match.group(1).splitlines() if not line.strip().startswith("--")
    )
    return [s.strip() for s in body.split(";") if s.strip()]


def socket_url(pg: Postgres, user: str, database: str) -> str:
    host = parse_qs(urlsplit(pg.dsn).query)["host"][0]
    return f"postgresql://{user}:@/{database}?host={host}"


def container_env(m: Manifests, container: Doc, secrets_: dict[tuple[str, str], str]) -> dict:
    """The environment the kubelet would give `container`: envFrom ConfigMaps, then env with
    ConfigMap/Secret references resolved (`secrets_` for the Secrets; optional ones that are
    absent are left out, as the kubelet does) and $(VAR) expanded."""
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        name = src["configMapRef"]["name"]
        env.update(next(d for d in m.of_kind("ConfigMap") if d["metadata"]["name"] == name)["data"])
    for e in container.get("env", []):
        ref = e.get("valueFrom", {})
        if "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            value = secrets_.get((r["name"], r["key"]))
            if value is None:
                assert r.get("optional"), f"test has no value for Secret {r['name']}/{r['key']}"
                continue
        elif "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            value = next(d for d in m.of_kind("ConfigMap") if d["metadata"]["name"] == r["name"])[
                "data"
            ][r["key"]]
        else:
            value = re.sub(r"\$\(([A-Za-z_]\w*)\)", lambda x: env.get(x[1], x[0]), e["value"])
        env[e["name"]] = value
    return env


# What the gateway image does not carry (deploy/docker/locks/gateway.txt): importing any of
# these in a process started by process_env fails, as it would in the image.
NOT_IN_GATEWAY_IMAGE = (
    "torch",
    "diffusers",
    "transformers",
    "peft",
    "accelerate",
    "onnxruntime",
    "onnx",
    "pgserver",
    "grpc_tools",
    "typer",
    "rich",
)
BLOCKER = """
import importlib.abc, sys
BLOCKED = set({blocked!r})
class _NotInImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not in the gateway image")
        return None
sys.meta_path.insert(0, _NotInImage())
"""


@pytest.fixture(scope="module")
def image_python_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """PYTHONPATH of a process that sees only the gateway image's packages: the code, and a
    sitecustomize that refuses every package the gateway's lock leaves out."""
    lock = (DEPLOY / "docker" / "locks" / "gateway.txt").read_text().lower()
    for module in ("torch", "diffusers", "transformers", "onnxruntime", "pgserver"):
        assert f"\n{module}==" not in lock, f"{module} is in the gateway lock"
    site = tmp_path_factory.mktemp("gateway-image-site")
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=NOT_IN_GATEWAY_IMAGE))
    return f"{site}{os.pathsep}{ROOT}"


def process_env(env: dict[str, str], python_path: str | None = None) -> dict[str, str]:
    # Only what the image adds (PATH, the code on PYTHONPATH); nothing of this shell's own.
    return {
        **{k: str(v) for k, v in env.items()},
        "PATH": os.environ["PATH"],
        "PYTHONPATH": python_path or str(ROOT),
        "HOME": os.environ.get("HOME", "/tmp"),
    }


def command(container: Doc) -> list[str]:
    cmd = [*container["command"], *container.get("args", [])]
    return [sys.executable if cmd[0] == "python" else cmd[0], *cmd[1:]]


def run(
    cmd: list[str], env: dict[str, str], python_path: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        env=process_env(env, python_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def address() -> str:
    ip = non_loopback_ipv4()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to reach the gateway on")
    return ip


@pytest.fixture(scope="module")
async def database(postgres: Postgres) -> dict[str, str]:
    """The guide's roles and database, created as the superuser; URLs per role."""
    engine = create_async_engine(postgres.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for stmt in guide_sql():
                await conn.execute(sa.text(stmt))
    finally:
        await engine.dispose()
    return {
        "owner": socket_url(postgres, OWNER, "headshots"),
        "app": socket_url(postgres, APP, "headshots"),
    }


@pytest.fixture(scope="module")
def test_secrets(database: dict[str, str]) -> dict[tuple[str, str], str]:
    return {
        ("headshots-secrets", "database-url"): database["app"],
        ("headshots-secrets", "master-key"): base64.b64encode(secrets.token_bytes(32)).decode(),
        ("headshots-db-owner", "uri"): database["owner"],
        ("headshots-gateway", "admin-token"): secrets.token_urlsafe(24),
        ("headshots-gateway", "key-pepper"): secrets.token_urlsafe(24),
    }


def substitute(env: dict[str, str], nats_url: str, tmp: Path) -> dict[str, str]:
    return {
        **env,
        "HS_NATS_URL": nats_url,
        "HS_BLOB_URL": f"file://{tmp / 'blobs'}",
        "HS_JETSTREAM_REPLICAS": "1",
    }


@pytest.fixture(scope="module")
def setup_job(
    manifests: dict[str, Manifests],
    test_secrets: dict[tuple[str, str], str],
    nats_server: NatsServer,
    image_python_path: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, subprocess.CompletedProcess]:
    """Step "Migrate and declare streams": the Job's two containers, in their order."""
    m = manifests["gpu"]
    job = m.get("Job", "headshots-setup")
    tmp = tmp_path_factory.mktemp("setup")
    done = {}
    for c in Manifests.pod_spec(job)["initContainers"] + Manifests.pod_spec(job)["containers"]:
        env = substitute(container_env(m, c, test_secrets), nats_server.url, tmp)
        # The Job runs the gateway image: only its packages are importable.
        assert c["image"].split("/")[-1].startswith("gateway")
        done[c["name"]] = proc = run(command(c), env, image_python_path)
        assert proc.returncode == 0, f"{c['name']}: {proc.stdout}\n{proc.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def gateway_env(
    manifests: dict[str, Manifests],
    test_secrets: dict[tuple[str, str], str],
    nats_server: NatsServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    m = manifests["gpu"]
    container = Manifests.containers(m.get("Deployment", "gateway"), init=False)[0]
    env = substitute(
        container_env(m, container, test_secrets), nats_server.url, tmp_path_factory.mktemp("gw")
    )
    env.update(
        HS_GRPC_PORT=str(free_port()),
        HS_GATEWAY_HTTP_PORT=str(free_port()),
        HS_METRICS_PORT=str(free_port()),
    )
    return env


@pytest.fixture(scope="module")
def gateway(
    manifests: dict[str, Manifests],
    gateway_env: dict[str, str],
    setup_job: dict[str, subprocess.CompletedProcess],
    address: str,
    image_python_path: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[subprocess.Popen]:
    container = Manifests.containers(manifests["gpu"].get("Deployment", "gateway"), init=False)[0]
    log = (tmp_path_factory.mktemp("gwlog") / "gateway.log").open("w+")
    proc = subprocess.Popen(
        command(container),
        env=process_env(gateway_env, image_python_path),
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    target = f"{address}:{gateway_env['HS_GRPC_PORT']}"
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"gateway exited {proc.returncode}:\n{log.read()[-4000:]}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "gateway never became SERVING"
            time.sleep(0.3)
    proc.log = log  # type: ignore[attr-defined]
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
    log.close()


# ------------------------------------------------------------------ the steps


def test_the_gateway_images_python_refuses_what_the_image_lacks(image_python_path: str) -> None:
    # So that the gateway and the setup Job running under it prove the image's set suffices.
    probe = "import importlib, sys; importlib.import_module(sys.argv[1])"
    for module in ("torch", "onnxruntime", "pgserver"):
        proc = run([sys.executable, "-c", probe, module], {}, image_python_path)
        assert proc.returncode != 0 and "is not in the gateway image" in proc.stderr
    ok = run([sys.executable, "-c", probe, "services.gateway.app"], {}, image_python_path)
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_setup_job_migrates_as_owner_and_grants_the_dml_role(
    setup_job: dict[str, subprocess.CompletedProcess],
) -> None:
    out = setup_job["migrate"].stdout
    for schema in ("keyring", "gateway", "retention", "filter"):
        assert f"migrated {schema}" in out
    assert f"granted DML on keyring, filter, gateway, retention to {APP}" in out


async def test_dml_role_reads_and_writes_but_cannot_change_the_schema(
    setup_job: dict[str, subprocess.CompletedProcess], database: dict[str, str]
) -> None:
    engine = create_async_engine(normalize_url(database["app"]), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM gateway.tenants")) >= 0
            await conn.rollback()
            for ddl in (
                "CREATE TABLE gateway.intruder (x int)",
                "ALTER TABLE gateway.tenants ADD COLUMN x int",
                "DROP TABLE keyring.data_keys",
                "UPDATE gateway.alembic_version SET version_num = 'x'",
            ):
                with pytest.raises(sa.exc.DBAPIError, match=r"(?i)permission denied|must be owner"):
                    await conn.execute(sa.text(ddl))
                await conn.rollback()
    finally:
        await engine.dispose()


async def test_bus_setup_creates_every_durable_keda_scales_on(
    setup_job: dict[str, subprocess.CompletedProcess],
    manifests: dict[str, Manifests],
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        for so in manifests["gpu"].of_kind("ScaledObject"):
            meta = so["spec"]["triggers"][0]["metadata"]
            info = await js.consumer_info(meta["stream"], meta["consumer"])
            assert info.config.durable_name == meta["consumer"]
    finally:
        await nc.close()


async def test_services_without_migrate_on_start_refuse_an_unmigrated_schema(
    postgres: Postgres,
) -> None:
    settings = ServiceSettings(migrate_on_start=False)
    with pytest.raises(SchemaNotReady, match="run the migrations Job"):
        await prepare_schemas(settings, postgres.url, "keyring", "gateway", wait_s=0)


def test_gateway_answers_grpc_and_rest_on_the_pods_address(
    gateway: subprocess.Popen, gateway_env: dict[str, str], address: str, manifests: dict
) -> None:
    # The manifests bind both servers to every address, as a pod needs.
    assert gateway_env["HS_GRPC_HOST"] == "0.0.0.0"
    assert gateway_env["HS_GATEWAY_HTTP_HOST"] == "0.0.0.0"
    container = Manifests.containers(manifests["gpu"].get("Deployment", "gateway"), init=False)[0]
    liveness = container["livenessProbe"]["httpGet"]["path"]
    reply = httpx.get(f"http://{address}:{gateway_env['HS_GATEWAY_HTTP_PORT']}{liveness}")
    assert reply.status_code == 200 and reply.json() == {"status": "ok"}
    with grpc.insecure_channel(f"{address}:{gateway_env['HS_GRPC_PORT']}") as channel:
        admin = pb_grpc.AdminServiceStub(channel)
        token = gateway_env["HS_GATEWAY_ADMIN_TOKEN"]
        tenant = admin.CreateTenant(
            pb.CreateTenantRequest(tenant_id="from-admin", tenant=pb.Tenant(display_name="A")),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
        assert tenant.name == "tenants/from-admin"
        with pytest.raises(grpc.RpcError) as refused:
            admin.CreateTenant(
                pb.CreateTenantRequest(tenant_id="nope"),
                metadata=(("authorization", "Bearer wrong"),),
                timeout=10,
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_bootstrap_command_creates_the_first_tenant_and_a_key_that_works(
    gateway: subprocess.Popen, gateway_env: dict[str, str], address: str, image_python_path: str
) -> None:
    # `kubectl exec deploy/gateway -- python -m services.gateway.bootstrap create-tenant ...`:
    # the gateway container's own environment.
    proc = run(
        [*BOOTSTRAP, "create-tenant", "acme", "--display-name", "Acme"],
        gateway_env,
        image_python_path,
    )
    assert proc.returncode == 0, proc.stderr
    created = json.loads(proc.stdout)
    assert created["tenant"] == "tenants/acme" and created["tenant_created"] is True
    key = created["api_key"]
    assert key.startswith("hs_")

    rest = f"http://{address}:{gateway_env['HS_GATEWAY_HTTP_PORT']}"
    listed = httpx.get(f"{rest}/v1/tenants/acme/orders", headers={"authorization": f"Bearer {key}"})
    assert listed.status_code == 200, listed.text
    denied = httpx.get(f"{rest}/v1/tenants/acme/orders", headers={"authorization": "Bearer x"})
    assert denied.status_code == 401
    with grpc.insecure_channel(f"{address}:{gateway_env['HS_GRPC_PORT']}") as channel:
        orders = pb_grpc.HeadshotServiceStub(channel).ListOrders(
            pb.ListOrdersRequest(parent="tenants/acme"),
            metadata=(("authorization", f"Bearer {key}"),),
            timeout=10,
        )
        assert list(orders.orders) == []


async def test_bootstrap_refuses_a_second_run_and_keys_without_a_pepper(
    gateway: subprocess.Popen, gateway_env: dict[str, str]
) -> None:
    settings = GatewaySettings(
        database_url=gateway_env["DATABASE_URL"],
        key_pepper=gateway_env["HS_GATEWAY_KEY_PEPPER"],
        migrate_on_start=False,
    )
    with pytest.raises(BootstrapError, match="already exists") as exists:
        await create_tenant(settings, "acme")
    assert exists.value.code == EXIT_EXISTS
    more = await create_tenant(settings, "acme", exists_ok=True, key_name="second")
    assert more["tenant_created"] is False and more["api_key"].startswith("hs_")
    with pytest.raises(BootstrapError, match="HS_GATEWAY_KEY_PEPPER is empty"):
        await create_tenant(settings.model_copy(update={"key_pepper": SecretStr("")}), "nopepper")


def test_gateway_exports_traces_with_the_otlp_exporter_installed(gateway: subprocess.Popen) -> None:
    gateway.log.seek(0)  # type: ignore[attr-defined]
    assert "opentelemetry-exporter-otlp is not installed" not in gateway.log.read()  # type: ignore[attr-defined]
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    assert OTLPSpanExporter


def test_gateway_stops_cleanly_on_sigterm(gateway: subprocess.Popen) -> None:
    gateway.send_signal(signal.SIGTERM)
    assert gateway.wait(timeout=40) == 0
