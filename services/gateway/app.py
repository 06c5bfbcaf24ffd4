"""The gateway process, assembled: gRPC (HeadshotService, AdminService), REST, the event
consumer, the outbox relay and the reconciler, on one `ServiceHost`.

`GatewayApp(settings)` is used by `python -m services.gateway` and, in process, by the tests
(`await app.start()` / `await app.stop()`), so both run the same wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
import uvicorn

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import headshots_pb2_grpc as pb_grpc
from headshots.v1 import internal_pb2_grpc
from services.common.bus.consumer import Worker
from services.common.bus.outbox import OutboxRelay
from services.common.grpc.server import CLIENT_CHANNEL_OPTIONS, ServiceHost
from services.common.outages import RetryPolicy
from services.common.ports import free_port
from services.common.resources import open_resources
from services.gateway.auth import Authenticator
from services.gateway.inputs import TextCheck
from services.gateway.openapi import build_openapi
from services.gateway.orchestrator import DURABLE, SUBJECT, Orchestrator
from services.gateway.ratelimit import RateLimiter
from services.gateway.reconciler import Reconciler
from services.gateway.rest import RestApp
from services.gateway.servicer import AdminServicer, Deps, HeadshotServicer
from services.gateway.settings import GatewaySettings
from services.gateway.tables import outbox
from services.gateway.watch import WatchHub
from services.policy.limits import limits

log = logging.getLogger(__name__)
SERVICES = (
    pb.DESCRIPTOR.services_by_name["HeadshotService"],
    pb.DESCRIPTOR.services_by_name["AdminService"],
)
# Internal calls carry up to 20 re-encoded photos (AnalyzeSelfies) or a few previews.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    *CLIENT_CHANNEL_OPTIONS,
]


def openapi_document() -> dict[str, Any]:
    return build_openapi(*SERVICES)


class GatewayApp:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        # Clients reach the gateway through an L7 proxy that balances per request; its
        # WatchOrder streams last for hours, so no connection-age limit here.
        self.host = ServiceHost(
            settings,
            interceptors=[TextCheck()],
            max_message_bytes=limits().max_message_bytes,
            max_connection_age_s=None,
        )
        self.http_port = 0
        self._closers: list[Any] = []
        self._resources = contextlib.AsyncExitStack()
        self._uvicorn: uvicorn.Server | None = None

    @property
    def port(self) -> int:
        return self.host.port

    async def prepare(self) -> None:
        """Connect to PostgreSQL, NATS and the internal services; register everything."""
        s = self.settings
        res = await self._resources.enter_async_context(
            open_resources(s, "gateway", schemas=["gateway"], erasures=False)
        )
        assert res.engine is not None
        self.engine, self.bus, blobs = res.engine, res.bus, res.blobs
        channels = {
            name: grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS)
            for name, addr in (
                ("filter", s.filter_addr),
                ("generator", s.generator_addr),
                ("retention", s.retention_addr),
            )
        }
        self.hub = WatchHub(self.engine)
        await self.hub.start()
        self.limiter = RateLimiter(self.engine, s.requests_per_minute)
        pepper = s.key_pepper.get_secret_value().encode()
        admin = s.admin_token.get_secret_value() if s.admin_token else None
        deps = Deps(
            settings=s,
            engine=self.engine,
            blobs=blobs,
            auth=Authenticator(self.engine, pepper, admin, proxies=s.proxies()),
            limiter=self.limiter,
            hub=self.hub,
            filter=internal_pb2_grpc.FilterServiceStub(channels["filter"]),
            generator=internal_pb2_grpc.GeneratorServiceStub(channels["generator"]),
            retention=internal_pb2_grpc.RetentionServiceStub(channels["retention"]),
        )
        self.host.add(
            pb_grpc.add_HeadshotServiceServicer_to_server,
            HeadshotServicer(deps),
            "headshots.v1.HeadshotService",
        )
        self.host.add(
            pb_grpc.add_AdminServiceServicer_to_server,
            AdminServicer(deps),
            "headshots.v1.AdminService",
        )
        self.relay = OutboxRelay(self.engine, outbox, self.bus)
        self.orchestrator = Orchestrator(self.engine, s)
        # Outages of PostgreSQL are waited out inside a delivery (RetryPolicy, HS_RETRY_*);
        # other failures back off, so 20 deliveries span about a minute, not milliseconds.
        self.events = Worker(
            self.bus,
            SUBJECT,
            DURABLE,
            self.orchestrator.handle,
            ack_wait=30,
            max_deliver=20,
            retry=RetryPolicy.from_settings(s),
        )
        self.reconciler = Reconciler(self.engine, self.bus, s, self.limiter)
        self.host.background(self.relay.run)
        self.host.background(self.events.run)
        self.host.background(self.reconciler.run)
        if s.http_port >= 0:
            self.http_port = s.http_port or free_port()
            self.host.background(self._serve_rest)
        self.host.on_shutdown(self._shutdown)
        self._closers = list(channels.values())

    async def _serve_rest(self) -> None:
        # The REST app calls this process's gRPC server: one code path for both APIs.
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.host.port}", options=CHANNEL_OPTIONS)
        self._closers.append(channel)
        app = RestApp(channel, SERVICES, openapi=openapi_document)
        config = uvicorn.Config(
            app,
            host=self.settings.http_host,
            port=self.http_port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self._uvicorn = uvicorn.Server(config)
        self._uvicorn.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        await self._uvicorn.serve()

    async def wait_rest(self) -> None:
        async with asyncio.timeout(10.0):
            while self._uvicorn is None or not self._uvicorn.started:  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # uvicorn offers a flag, not an event

    async def _shutdown(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        await self.events.stop(drain=True)
        await self.reconciler.stop()
        await self.relay.stop()

    async def start(self) -> None:
        await self.prepare()
        await self.host.start()
        if self.http_port:
            await self.wait_rest()

    async def close(self) -> None:
        """After the host stopped: close connections."""
        for channel in self._closers:
            with contextlib.suppress(Exception):
                await channel.close()
        await self.hub.stop()
        await self._resources.aclose()

    async def stop(self) -> None:
        await self.host.stop()
        await self.close()

    async def run(self) -> None:
        await self.prepare()
        try:
            await self.host.run()
        finally:
            await self.close()
