"""Component nats-tls against a real nats-server: the rendered nats.conf (TLS, one user per
service, per-user permissions) with a CA and server certificate made here in place of
cert-manager's, and clients connecting the way the manifests make them connect (`tls://user:
$(NATS_PASSWORD)@host`, trust from SSL_CERT_FILE). The cluster block is dropped (one server
here); everything else is the file the cluster gets.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import re
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from conftest import Manifests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.embedded import nats_server_binary, wait_for_port
from services.common.bus.client import Bus
from services.common.bus.setup import JOB_DURABLES
from services.common.bus.setup import run as bus_setup
from services.common.ports import free_port
from services.common.settings import ServiceSettings

pytestmark = pytest.mark.integration


@dataclass
class TlsNats:
    port: int
    passwords: dict[str, str]
    ca: Path

    def url(self, manifests: Manifests, user: str) -> str:
        """The URL the manifests give `user`'s pods, pointed at this server."""
        env = _client_env(manifests, user)
        return (
            env["HS_NATS_URL"]["value"]
            .replace("$(NATS_PASSWORD)", self.passwords[user])
            .replace("nats.headshots.svc.cluster.local:4222", f"localhost:{self.port}")
        )


def _client_env(m: Manifests, user: str) -> dict:
    if user == "setup":
        job = m.get("Job", "headshots-setup")
        container = next(c for c in Manifests.containers(job) if c["name"] == "bus-setup")
    else:
        container = Manifests.containers(m.get("Deployment", user), init=False)[0]
    return Manifests.env(container)


def _certificates(directory: Path) -> None:
    """ca.crt, tls.crt, tls.key as cert-manager writes them (ECDSA P-256), for localhost."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "headshots-nats-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nats")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True)
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _without_block(conf: str, name: str) -> str:
    start = conf.index(f"\n{name} {{")
    depth, i = 0, conf.index("{", start)
    while True:
        depth += {"{": 1, "}": -1}.get(conf[i], 0)
        if depth == 0:
            return conf[:start] + conf[i + 1 :]
        i += 1


@pytest.fixture(scope="module")
def production(manifests: dict[str, Manifests]) -> Manifests:
    return manifests["production"]


@pytest.fixture(scope="module")
def tls_nats(production: Manifests, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsNats]:
    tmp = tmp_path_factory.mktemp("nats-tls")
    _certificates(tmp / "tls")
    conf = production.configmap_data("nats-config")["nats.conf"]
    port, monitor = free_port(), free_port()
    conf = _without_block(conf, "cluster")
    conf = (
        conf.replace("/etc/nats-tls/", f"{tmp}/tls/")
        .replace("/data/jetstream", f"{tmp}/js")
        .replace("/var/run/nats/nats.pid", f"{tmp}/nats.pid")
        .replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{port}")
        .replace("http: 0.0.0.0:8222", f"http: 127.0.0.1:{monitor}")
        .replace("max_file_store: 45G", "max_file_store: 256M")
    )
    (tmp / "nats.conf").write_text(conf)
    server = Manifests.containers(production.get("StatefulSet", "nats"), init=False)[0]
    password_vars = [n for n in Manifests.env(server) if n.startswith("NATS_PASSWORD_")]
    passwords = {
        v.removeprefix("NATS_PASSWORD_").lower(): secrets.token_hex(16) for v in password_vars
    }
    env = {"POD_NAME": "nats-0"} | {f"NATS_PASSWORD_{u.upper()}": p for u, p in passwords.items()}
    log = (tmp / "nats.log").open("wb")
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(tmp / "nats.conf")], env=env, stdout=log, stderr=log
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        yield TlsNats(port, passwords, tmp / "tls" / "ca.crt")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
def trusting_the_ca(tls_nats: TlsNats, monkeypatch: pytest.MonkeyPatch) -> None:
    # What the manifests set in every service container.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_nats.ca))


@pytest.fixture
async def setup_done(
    tls_nats: TlsNats, production: Manifests, trusting_the_ca: None
) -> AsyncIterator[None]:
    url = tls_nats.url(production, "setup")
    await bus_setup(ServiceSettings(nats_url=url, jetstream_replicas=1))
    yield


def test_every_service_has_a_user_a_password_and_a_tls_url(
    production: Manifests, tls_nats: TlsNats
) -> None:
    conf = production.configmap_data("nats-config")["nats.conf"]
    users = set(re.findall(r"user: (\w+)", conf))
    assert users == {"gateway", "retention", "filter", "generator", "trainer", "setup"}
    assert set(tls_nats.passwords) == users
    for user in users:
        env = _client_env(production, user)
        assert env["HS_NATS_URL"]["value"].startswith(f"tls://{user}:$(NATS_PASSWORD)@")
        assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "headshots-nats-users",
            "key": user,
        }
        assert env["SSL_CERT_FILE"]["value"].endswith("/ca.crt")


async def test_plaintext_anonymous_and_wrong_password_clients_are_refused(
    tls_nats: TlsNats, production: Manifests, trusting_the_ca: None
) -> None:
    for url in (
        f"nats://127.0.0.1:{tls_nats.port}",
        f"tls://localhost:{tls_nats.port}",
        f"tls://gateway:wrong@localhost:{tls_nats.port}",
    ):
        with pytest.raises(Exception):  # noqa: B017 - nats-py raises several kinds here
            await asyncio.wait_for(
                nats.connect(url, allow_reconnect=False, connect_timeout=3), timeout=10
            )


async def test_setup_user_declares_streams_and_every_durable(
    tls_nats: TlsNats, production: Manifests, setup_done: None
) -> None:
    bus = await Bus.connect(tls_nats.url(production, "trainer"), name="check")
    try:
        for durable in JOB_DURABLES.values():
            info = await bus.js.consumer_info("JOBS", durable)
            assert info.config.durable_name == durable
    finally:
        await bus.close()


async def test_services_do_their_work_and_nothing_else(
    tls_nats: TlsNats, production: Manifests, setup_done: None
) -> None:
    gateway = await Bus.connect(tls_nats.url(production, "gateway"), name="gateway")
    trainer = await Bus.connect(tls_nats.url(production, "trainer"), name="trainer")
    try:
        # gateway → a training job; the trainer pulls it from its durable and acks it.
        await gateway.js.publish("jobs.train", b"job", headers={"Nats-Msg-Id": "o-1:train"})
        sub = await trainer.js.pull_subscribe_bind("trainer", stream="JOBS")
        (msg,) = await sub.fetch(1, timeout=5)
        assert msg.data == b"job"
        await msg.ack_sync()
        # The trainer reports progress on the events stream.
        ack = await trainer.js.publish("events.training.progress", b"50%")
        assert ack.stream == "EVENTS"
    finally:
        await gateway.close()
        await trainer.close()

    # What a user may not do: the server refuses it (a permissions violation, reported
    # asynchronously to the client's error callback).
    for user, subject in (("retention", "jobs.train"), ("gateway", "dead.jobs.train")):
        errors: list[str] = []

        async def on_error(e: Exception, into: list[str] = errors) -> None:
            into.append(str(e))

        nc = await nats.connect(tls_nats.url(production, user), error_cb=on_error)
        try:
            await nc.publish(subject, b"x")
            await nc.flush(timeout=5)
            await asyncio.sleep(0.5)
        finally:
            await nc.close()
        assert any("permissions violation" in e.lower() for e in errors), (user, errors)
