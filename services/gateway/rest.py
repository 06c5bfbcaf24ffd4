"""REST for internal teams, transcoded from the protos' `google.api.http` annotations.

An ASGI app that turns each HTTP request into the gRPC call its annotation names and calls
the gateway's own gRPC server over a loopback channel, the way grpc-gateway and Envoy's
transcoder do. Auth, rate limits, validation and error details therefore live in one
place (the servicer); this layer only translates:

- request: path variables + query parameters + JSON body -> request message
  (protobuf's `json_format`, unknown fields refused);
- response: message -> JSON (`json_format`, proto3 JSON mapping);
- errors: gRPC status + google.rpc details -> RFC 9457 `application/problem+json` with the
  field and quota violations spelled out;
- streaming: WatchOrder as NDJSON (`application/x-ndjson`, one WatchOrderResponse a line) or
  Server-Sent Events when the client asks for `text/event-stream`; DownloadResult as the raw
  image bytes; UploadPhotos takes a JSON array of UploadPhotosRequest messages (Envoy's
  convention for client streams), a single message, or the raw bytes of one image with
  `?filename=`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2, status_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from services.common.grpc.errors import DOMAIN, GRPC_DETAILS_METADATA_KEY, MAX_MESSAGE, clip
from services.gateway.client_ip import forwarded_metadata
from services.gateway.httprules import Route, routes
from services.policy.limits import limits

log = logging.getLogger(__name__)

# google.rpc.Code -> HTTP status, as in google/rpc/code.proto.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
PROBLEM = "application/problem+json"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
# A streamed upload (raw image bytes, or a JSON array of chunks) may carry several photos.
MAX_BODY_BYTES = 64 * 1024 * 1024
# One request message: the gateway's gRPC message cap (ServiceHost's max_message_bytes).
MAX_MESSAGE_BYTES = limits().max_message_bytes
# Headers passed on as gRPC metadata, together: under gRPC's 8 KiB metadata soft limit,
# with room for what gRPC adds itself.
MAX_HEADER_BYTES = 7 * 1024
UPLOAD_CHUNK = 1024 * 1024
# Headers passed on to the gRPC call as metadata.
# X-Forwarded-For counts only when the HTTP client is a trusted proxy (client_ip.py).
FORWARDED = ("authorization", "x-request-id", "traceparent", "tracestate", "x-forwarded-for")


class HttpError(Exception):
    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra


def problem_type(code: str) -> str:
    return f"urn:headshots:problem:{code.lower().replace('_', '-')}"


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": problem_type(title),
        "title": title,
        "status": status,
        "detail": clip(detail, MAX_MESSAGE),
        # ErrorInfo's reason and domain on every problem, as on every gRPC status.
        "reason": title,
        "domain": DOMAIN,
    }
    body.update({k: v for k, v in extra.items() if v})
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def _details_json(status: status_pb2.Status) -> dict[str, Any]:
    """The google.rpc details as problem members (and all of them under `details`)."""
    out: dict[str, Any] = {"details": []}
    for any_msg in status.details:
        for cls in (
            error_details_pb2.BadRequest,
            error_details_pb2.QuotaFailure,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
        ):
            if any_msg.Is(cls.DESCRIPTOR):
                msg = cls()
                any_msg.Unpack(msg)
                break
        else:
            msg = _unpack_known(any_msg)
            if msg is None:
                continue
        as_json = json_format.MessageToDict(msg)
        out["details"].append({"@type": any_msg.type_url, **as_json})
        if isinstance(msg, error_details_pb2.BadRequest):
            out["violations"] = [
                {"field": v.field, "description": v.description} for v in msg.field_violations
            ]
        elif isinstance(msg, error_details_pb2.QuotaFailure):
            out["quotaViolations"] = [
                {"subject": v.subject, "description": v.description} for v in msg.violations
            ]
        elif isinstance(msg, error_details_pb2.ErrorInfo):
            out["reason"] = msg.reason
        elif isinstance(msg, error_details_pb2.RetryInfo):
            out["retryAfterSeconds"] = msg.retry_delay.ToTimedelta().total_seconds()
    return out


def _unpack_known(any_msg: Any) -> Message | None:
    from google.protobuf import symbol_database

    name = any_msg.type_url.rsplit("/", 1)[-1]
    try:
        cls = symbol_database.Default().GetSymbol(name)
    except KeyError:
        return None
    msg = cls()
    any_msg.Unpack(msg)
    return msg


def rpc_problem(err: grpc.aio.AioRpcError) -> JSONResponse:
    code = err.code()
    extra: dict[str, Any] = {"code": code.name}
    for key, value in err.trailing_metadata() or ():
        if key == GRPC_DETAILS_METADATA_KEY:
            extra.update(_details_json(status_pb2.Status.FromString(value)))
    status = HTTP_STATUS.get(code, 500)
    response = problem(status, code.name, err.details() or code.name, **extra)
    retry = extra.get("retryAfterSeconds")
    if retry:
        response.headers["retry-after"] = str(max(1, round(retry)))
    return response


# ------------------------------------------------------------------------------ request


def _set_path(msg: Message, dotted: str, value: str) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        msg = getattr(msg, part)
    setattr(msg, last, value)


def _query_into(msg: Message, query: Iterable[tuple[str, str]], bound: set[str]) -> None:
    """Query parameters -> fields (scalars, enums by name or number, repeated by repetition)."""
    values: dict[str, list[str]] = {}
    for key, value in query:
        values.setdefault(key, []).append(value)
    for key, items in values.items():
        if key in bound:
            raise HttpError(400, "INVALID_ARGUMENT", f"{key} is part of the path")
        target, fd = _resolve(msg, key)
        if fd.message_type is not None and not fd.message_type.GetOptions().map_entry:
            wkt = fd.message_type.full_name
            if wkt not in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
                raise HttpError(400, "INVALID_ARGUMENT", f"{key} cannot be set from the query")
        repeated = fd.is_repeated
        if not repeated and len(items) > 1:
            raise HttpError(400, "INVALID_ARGUMENT", f"{key} given more than once")
        parsed = [_scalar(fd, v, key) for v in items]
        try:
            json_format.ParseDict({fd.json_name: parsed if repeated else parsed[0]}, target)
        except json_format.ParseError as err:
            raise HttpError(400, "INVALID_ARGUMENT", f"query parameter {key}: {err}") from err


def _resolve(msg: Message, dotted: str) -> tuple[Message, FieldDescriptor]:
    target = msg
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fd = _field(target.DESCRIPTOR, part)
        if fd is None:
            raise HttpError(400, "INVALID_ARGUMENT", f"unknown query parameter {dotted!r}")
        if i == len(parts) - 1:
            return target, fd
        if fd.message_type is None or fd.is_repeated:
            raise HttpError(400, "INVALID_ARGUMENT", f"unknown query parameter {dotted!r}")
        target = getattr(target, fd.name)
    raise AssertionError("unreachable")


def _field(desc: Descriptor, name: str) -> FieldDescriptor | None:
    fd = desc.fields_by_name.get(name)
    if fd is None:
        fd = next((f for f in desc.fields if f.json_name == name), None)
    return fd


def _scalar(fd: FieldDescriptor, value: str, key: str) -> Any:
    t = fd.type
    if t == FieldDescriptor.TYPE_BOOL:
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0"):
            return False
        raise HttpError(400, "INVALID_ARGUMENT", f"{key} must be true or false")
    if t == FieldDescriptor.TYPE_ENUM:
        return int(value) if value.lstrip("-").isdigit() else value
    if t in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return value
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        try:
            return float(value)
        except ValueError as err:
            raise HttpError(400, "INVALID_ARGUMENT", f"{key} must be a number") from err
    if t == FieldDescriptor.TYPE_MESSAGE:
        return value
    try:
        return int(value)
    except ValueError as err:
        raise HttpError(400, "INVALID_ARGUMENT", f"{key} must be an integer") from err


async def _json_body(request: Request, cap: int = MAX_MESSAGE_BYTES) -> Any:
    raw = await _read_body(request, cap)
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except RecursionError as err:
        # Nesting deeper than Python's parser recurses: no message is that deep.
        raise HttpError(400, "INVALID_ARGUMENT", "the body is nested too deeply") from err
    except ValueError as err:
        raise HttpError(
            400, "INVALID_ARGUMENT", f"the body is not valid JSON: {clip(str(err), 120)}"
        ) from err


def _too_large(cap: int) -> HttpError:
    return HttpError(413, "PAYLOAD_TOO_LARGE", f"the body is larger than {cap:,} bytes")


async def _read_body(request: Request, cap: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _too_large(cap)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _too_large(cap)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(cls: type[Message], data: Any, what: str) -> Message:
    if not isinstance(data, dict):
        raise HttpError(400, "INVALID_ARGUMENT", f"{what} must be a JSON object")
    try:
        msg = json_format.ParseDict(data, cls())
    except RecursionError as err:
        raise HttpError(400, "INVALID_ARGUMENT", f"{what} is nested too deeply") from err
    except (json_format.ParseError, ValueError, TypeError) as err:
        raise HttpError(400, "INVALID_ARGUMENT", f"{what}: {clip(str(err), 200)}") from err
    if msg.ByteSize() > MAX_MESSAGE_BYTES:
        raise HttpError(
            413, "PAYLOAD_TOO_LARGE", f"{what} is larger than {MAX_MESSAGE_BYTES:,} bytes"
        )
    return msg


async def build_request(route: Route, request: Request, path_vars: dict[str, str]) -> Message:
    cls = GetMessageClass(route.method.input_type)
    if route.body == "*":
        msg = _parse(cls, await _json_body(request), "the body")
    elif route.body:
        msg = cls()
        fd = route.method.input_type.fields_by_name[route.body]
        sub = _parse(GetMessageClass(fd.message_type), await _json_body(request), route.body)
        getattr(msg, route.body).CopyFrom(sub)
    else:
        msg = cls()
    bound = set(path_vars) | ({route.body} if route.body and route.body != "*" else set())
    if route.body != "*":
        _query_into(msg, request.query_params.multi_items(), bound)
    for var, value in path_vars.items():
        _set_path(msg, var, value)
    return msg


async def upload_messages(
    route: Route, request: Request, path_vars: dict[str, str]
) -> list[Message]:
    """The client stream of a client-streaming method, from one HTTP body."""
    cls = GetMessageClass(route.method.input_type)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        filename = request.query_params.get("filename") or "upload"
        raw = await _read_body(request)
        messages = []
        for start in range(0, max(len(raw), 1), UPLOAD_CHUNK):
            msg = cls()
            if start == 0:
                json_format.ParseDict({"filename": filename, "contentType": content_type}, msg)
            msg.data = raw[start : start + UPLOAD_CHUNK]  # type: ignore[attr-defined]
            messages.append(msg)
    else:
        body = await _json_body(request, MAX_BODY_BYTES)
        items = body if isinstance(body, list) else [body]
        if not items:
            raise HttpError(400, "INVALID_ARGUMENT", "the body is an empty list")
        messages = [_parse(cls, item, f"message {i}") for i, item in enumerate(items)]
    for var, value in path_vars.items():
        _set_path(messages[0], var, value)
    return messages


# ------------------------------------------------------------------------------ app


def to_json(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg)


class RestApp:
    """ASGI app: `RestApp(channel, [service descriptors], openapi=...)`."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        services: Iterable[ServiceDescriptor],
        openapi: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.channel = channel
        self.routes = routes(*services)
        self._openapi = openapi
        self._openapi_doc: dict[str, Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            response = await self.dispatch(request)
        except HttpError as err:
            response = problem(err.status, err.title, err.detail, **err.extra)
        except grpc.aio.AioRpcError as err:
            response = rpc_problem(err)
        except Exception:
            log.exception("REST %s %s failed", request.method, request.url.path)
            response = problem(500, "INTERNAL", "internal error; it has been logged")
        await response(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self._openapi_doc is None:
            assert self._openapi is not None
            self._openapi_doc = self._openapi()
        return self._openapi_doc

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        if path == "/openapi.json" and request.method == "GET" and self._openapi:
            return JSONResponse(self.openapi())
        if path == "/healthz":
            return JSONResponse({"status": "ok"})
        allowed = []
        for route in self.routes:
            path_vars = route.match(path)
            if path_vars is None:
                continue
            if route.http_method != request.method:
                allowed.append(route.http_method)
                continue
            return await self.call(route, request, path_vars)
        if allowed:
            resp = problem(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here")
            resp.headers["allow"] = ", ".join(sorted(set(allowed)))
            return resp
        raise HttpError(404, "NOT_FOUND", f"no route for {request.method} {path}")

    def _metadata(self, request: Request) -> tuple[tuple[str, str], ...]:
        passed = tuple((h, request.headers[h]) for h in FORWARDED if h in request.headers)
        if sum(len(h) + len(v) for h, v in passed) > MAX_HEADER_BYTES:
            raise HttpError(
                431,
                "REQUEST_HEADER_FIELDS_TOO_LARGE",
                f"the {', '.join(h for h, _ in passed)} headers together are larger than "
                f"{MAX_HEADER_BYTES:,} bytes",
            )
        # The HTTP client, not this loopback hop, is the caller the auth throttle counts.
        return passed + forwarded_metadata(request.client.host if request.client else None)

    async def call(self, route: Route, request: Request, path_vars: dict[str, str]) -> Response:
        in_cls = GetMessageClass(route.method.input_type)
        out_cls = GetMessageClass(route.method.output_type)
        metadata = self._metadata(request)
        serializer, deserializer = in_cls.SerializeToString, out_cls.FromString
        if route.client_streaming:
            messages = await upload_messages(route, request, path_vars)
            call = self.channel.stream_unary(
                route.grpc_path, request_serializer=serializer, response_deserializer=deserializer
            )

            async def stream() -> AsyncIterator[Message]:
                for m in messages:
                    yield m

            reply = await call(stream(), metadata=metadata)
            return JSONResponse(to_json(reply))
        message = await build_request(route, request, path_vars)
        if route.server_streaming:
            call = self.channel.unary_stream(
                route.grpc_path, request_serializer=serializer, response_deserializer=deserializer
            )
            return await self._streaming(call(message, metadata=metadata), route, request)
        unary = self.channel.unary_unary(
            route.grpc_path, request_serializer=serializer, response_deserializer=deserializer
        )
        reply = await unary(message, metadata=metadata)
        return JSONResponse(to_json(reply))

    async def _streaming(self, call: Any, route: Route, request: Request) -> Response:
        fields = route.method.output_type.fields_by_name
        iterator = call.__aiter__()
        # Wait for the first message before answering, so an error (not found, no key)
        # becomes a proper problem response instead of a broken 200 stream.
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            first = None
        if "data" in fields and "content_type" in fields:
            return self._bytes_stream(first, iterator)
        sse = SSE in request.headers.get("accept", "")

        def line(msg: Message) -> bytes:
            data = json.dumps(to_json(msg), separators=(",", ":"))
            if not sse:
                return data.encode() + b"\n"
            ident = getattr(msg, "sequence", None)
            head = f"id: {ident}\n" if ident else ""
            return f"{head}event: message\ndata: {data}\n\n".encode()

        async def body() -> AsyncIterator[bytes]:
            if first is None:
                return
            yield line(first)
            try:
                async for msg in iterator:
                    yield line(msg)
            except grpc.aio.AioRpcError as err:
                # Headers are gone already: the error travels as the stream's last item.
                err_body = json.loads(bytes(rpc_problem(err).body))
                data = json.dumps({"error": err_body})
                yield (f"event: error\ndata: {data}\n\n" if sse else data + "\n").encode()

        headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
        return StreamingResponse(body(), media_type=SSE if sse else NDJSON, headers=headers)

    def _bytes_stream(self, first: Message | None, iterator: Any) -> Response:
        if first is None:
            return Response(b"", media_type="application/octet-stream")
        content_type = first.content_type or "application/octet-stream"  # type: ignore[attr-defined]
        headers = {}
        if first.total_size:  # type: ignore[attr-defined]
            headers["content-length"] = str(first.total_size)  # type: ignore[attr-defined]

        async def body() -> AsyncIterator[bytes]:
            yield bytes(first.data)  # type: ignore[attr-defined]
            async for msg in iterator:
                yield bytes(msg.data)

        return StreamingResponse(body(), media_type=content_type, headers=headers)
