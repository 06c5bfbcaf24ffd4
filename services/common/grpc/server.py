"""gRPC server bootstrap shared by every service.

`ServiceHost` runs an aio server with health (grpc.health.v1), reflection, interceptors
(logging + metrics, error mapping to google.rpc details, deadline propagation, an optional
auth hook), Prometheus metrics, background tasks (job workers, relays), and the shutdown
sequence operators expect from a Kubernetes pod:

SIGTERM → health NOT_SERVING (load balancers and probes stop sending work) → stop taking
jobs (shutdown hooks: workers stop fetching, in-flight jobs finish or are nak'ed) → server
stops with a grace period for in-flight RPCs → exit 0, all inside HS_SHUTDOWN_GRACE_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from services.common import metrics
from services.common.grpc.errors import ApiError, internal
from services.common.outages import dependency_down, what_is_down
from services.common.settings import ServiceSettings
from services.common.telemetry import setup_telemetry

log = logging.getLogger(__name__)

# Remaining time of the incoming RPC, so outgoing calls inherit the caller's deadline.
current_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "current_deadline", default=None
)

AuthHook = Callable[[str, dict[str, str]], Awaitable[Any]]


def outgoing_timeout(default: float) -> float:
    """Timeout for a call made while serving an RPC: never past the caller's deadline."""
    deadline = current_deadline.get()
    if deadline is None:
        return default
    return max(0.0, min(default, deadline - time.monotonic()))


class _ObservingInterceptor(grpc.aio.ServerInterceptor):
    """Logs, counts and times every RPC; maps ApiError and unexpected errors to statuses."""

    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if method.startswith("/grpc.health") or method.startswith("/grpc.reflection"):
            return handler
        return _wrap_handler(handler, method, self._service)


# How long a client should wait before retrying a call that met an outage.
OUTAGE_RETRY_AFTER_S = 2.0


def dependency_unavailable(what: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.UNAVAILABLE,
        f"the service's {what} is unavailable; retry shortly",
        reason="DEPENDENCY_UNAVAILABLE",
        metadata={"dependency": what},
        retry_after_s=OUTAGE_RETRY_AFTER_S,
    )


def _wrap_handler(
    handler: grpc.RpcMethodHandler, method: str, service: str
) -> grpc.RpcMethodHandler:
    def begin(context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        current_deadline.set(time.monotonic() + remaining if remaining is not None else None)
        return time.perf_counter()

    def end(start: float, code: str) -> None:
        elapsed = time.perf_counter() - start
        metrics.RPCS.labels(service, method, code).inc()
        metrics.RPC_SECONDS.labels(service, method).observe(elapsed)
        log.info(
            "rpc", extra={"fields": {"method": method, "code": code, "ms": round(elapsed * 1e3, 1)}}
        )

    async def on_error(exc: BaseException, context: grpc.aio.ServicerContext) -> str:
        if isinstance(exc, asyncio.CancelledError):
            raise exc
        if not isinstance(exc, ApiError) and dependency_down(exc):
            # A dependency (PostgreSQL, NATS, blob store) is down: the same call will work
            # later, so say UNAVAILABLE with a retry hint rather than INTERNAL.
            what = what_is_down(exc)
            log.warning("%s: %s unavailable: %r", method, what, exc)
            exc = dependency_unavailable(what)
        if isinstance(exc, ApiError):
            from grpc_status import rpc_status

            await context.abort_with_status(rpc_status.to_status(exc.to_status()))
        log.exception("unhandled error in %s", method)
        from grpc_status import rpc_status

        await context.abort_with_status(rpc_status.to_status(internal().to_status()))
        return "INTERNAL"

    def code_of(context: grpc.aio.ServicerContext) -> str:
        code = context.code()
        if code is None:
            return "OK"
        return code.name if isinstance(code, grpc.StatusCode) else str(code)

    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def unary_behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = begin(context)
            try:
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await on_error(exc, context)
            finally:
                end(start, code_of(context))

        factory = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary
            else grpc.stream_unary_rpc_method_handler
        )
        return factory(
            unary_behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    inner_stream = handler.unary_stream or handler.stream_stream

    async def stream_behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = begin(context)
        try:
            async for item in inner_stream(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await on_error(exc, context)
        finally:
            end(start, code_of(context))

    factory = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return factory(
        stream_behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


# grpc.reflection.v1 has the same messages as v1alpha, field for field; grpcio-reflection
# ships only v1alpha, so v1 is the same servicer under the v1 name (grpcurl and Postman try
# v1 first, older tools only know v1alpha).
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def enable_reflection(server: grpc.aio.Server, service_names: list[str]) -> None:
    from grpc_reflection.v1alpha import reflection_pb2 as rpb

    names = [*service_names, reflection.SERVICE_NAME, REFLECTION_V1]
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        REFLECTION_V1,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=rpb.ServerReflectionRequest.FromString,
                response_serializer=rpb.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))


T = TypeVar("T")


class Consumer(Protocol):
    async def run(self) -> None: ...

    async def stop(self, drain: bool = True, grace: float | None = None) -> None: ...


# Internal servers close each connection (GOAWAY) after a few minutes so that clients
# re-resolve their target and spread over replicas added since (client round_robin over a
# headless Service); calls in flight get the grace. Pings keep idle connections alive through
# NAT and find dead peers; the server accepts client pings as often as CLIENT_CHANNEL_OPTIONS
# sends them.
MAX_CONNECTION_AGE_S = 300.0
MAX_CONNECTION_AGE_GRACE_S = 600.0
SERVER_KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),
]
# For service-to-service channels: round_robin over every address the name resolves to
# (`dns:///filter-headless:50053` → each filter pod), pings no more often than the server allows.
CLIENT_CHANNEL_OPTIONS = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class ServiceHost:
    """One process's gRPC server, health, metrics, background work and shutdown."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        default_port: int = 0,
        interceptors: list[grpc.aio.ServerInterceptor] | None = None,
        max_message_bytes: int = 8 * 1024 * 1024,
        max_connection_age_s: float | None = MAX_CONNECTION_AGE_S,
    ) -> None:
        """`max_connection_age_s=None` for a server whose clients balance per request
        themselves (the gateway behind an L7 proxy) and whose streams last for hours."""
        if settings.grpc_port == 0 and default_port:
            settings.grpc_port = default_port
        self.settings = settings
        age = (
            [
                ("grpc.max_connection_age_ms", int(max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", int(MAX_CONNECTION_AGE_GRACE_S * 1000)),
            ]
            if max_connection_age_s
            else []
        )
        setup_telemetry(settings)
        self.server = grpc.aio.server(
            interceptors=[_ObservingInterceptor(settings.service_name), *(interceptors or [])],
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
                *SERVER_KEEPALIVE_OPTIONS,
                *age,
            ],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names: list[str] = [
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        ]
        self._shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        self._startup_hooks: list[Callable[[], Awaitable[None]]] = []
        self._background: list[Callable[[], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._opened = contextlib.AsyncExitStack()
        self.port: int = 0
        self.metrics_port: int = 0

    def add(
        self, adder: Callable[[Any, grpc.aio.Server], None], servicer: Any, full_name: str
    ) -> None:
        adder(servicer, self.server)
        self._service_names.append(full_name)

    def on_startup(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Runs before the port reports SERVING (e.g. warm a model, run migrations)."""
        self._startup_hooks.append(hook)

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Runs after NOT_SERVING, before the server stops: stop workers, drain, close."""
        self._shutdown_hooks.append(hook)

    def background(self, factory: Callable[[], Awaitable[None]]) -> None:
        """A long-running task (job worker, relay) started once the server serves."""
        self._background.append(factory)

    async def enter(self, resources: AbstractAsyncContextManager[T]) -> T:
        """Open `resources` now (in a start-up hook); closed after the shutdown hooks."""
        return await self._opened.enter_async_context(resources)

    def consume(self, worker: Consumer, before_stop: Callable[[], None] | None = None) -> None:
        """Run a job consumer once serving; on shutdown stop it, letting the job in hand
        finish or be handed back inside the grace period (`before_stop` first, e.g. to ask a
        training loop to checkpoint)."""
        self.background(worker.run)

        async def stop() -> None:
            if before_stop is not None:
                before_stop()
            grace = max(1.0, self.settings.shutdown_grace_seconds - 2)
            await worker.stop(drain=True, grace=grace)

        self.on_shutdown(stop)

    @property
    def stopping(self) -> asyncio.Event:
        return self._stopping

    async def _set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        await self.health.set("", status)
        for name in self._service_names:
            await self.health.set(name, status)

    async def start(self) -> int:
        enable_reflection(self.server, self._service_names)
        self.port = self.server.add_insecure_port(
            f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        )
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        if self.settings.metrics_port >= 0:
            self.metrics_port = metrics.start_metrics_server(
                self.settings.metrics_port, self.settings.metrics_host
            )
        for hook in self._startup_hooks:
            await hook()
        for factory in self._background:
            self._tasks.append(asyncio.create_task(self._supervise(factory)))
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            extra={
                "fields": {
                    "port": self.port,
                    "services": self._service_names,
                    "metrics_port": self.metrics_port,
                }
            },
        )
        return self.port

    async def _supervise(self, factory: Callable[[], Awaitable[None]]) -> None:
        # A background loop that dies must not leave a pod that looks healthy but does no work.
        try:
            await factory()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task failed; reporting NOT_SERVING and stopping")
            self._stopping.set()

    async def stop(self) -> None:
        grace = self.settings.shutdown_grace_seconds
        deadline = time.monotonic() + grace
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        for hook in self._shutdown_hooks:
            remaining = max(0.1, deadline - time.monotonic() - 1.0)
            try:
                await asyncio.wait_for(hook(), timeout=remaining)
            except TimeoutError:
                log.warning("shutdown hook did not finish in its grace period")
            except Exception:
                log.exception("shutdown hook failed")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._opened.aclose()
        except Exception:
            log.exception("closing the service's connections failed")
        await self.server.stop(max(0.1, deadline - time.monotonic() - 0.5))
        log.info("stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (or a dead background task), then stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        await self.start()
        await self._stopping.wait()
        log.info("shutdown requested")
        await self.stop()


def run_service(main: Callable[[], Awaitable[None]]) -> None:
    """Entry point helper for `python -m services.<name>`."""
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
