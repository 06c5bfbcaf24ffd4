"""OpenTelemetry traces, Prometheus metrics and JSON logs carrying the trace id.

NATS has no official OpenTelemetry instrumentation, so trace context travels in message
headers as W3C `traceparent` through `inject` / `extract` below.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from services.common.settings import ServiceSettings

_configured = False


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans as JSON lines; lets a test read spans of many processes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for s in spans:
            ctx = s.get_span_context()
            parent = s.parent
            lines.append(
                json.dumps(
                    {
                        "name": s.name,
                        "trace_id": f"{ctx.trace_id:032x}",
                        "span_id": f"{ctx.span_id:016x}",
                        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
                        "service": s.resource.attributes.get("service.name"),
                        "kind": s.kind.name,
                        "start": s.start_time,
                        "end": s.end_time,
                        "attributes": {k: _jsonable(v) for k, v in (s.attributes or {}).items()},
                    }
                )
            )
        with self._lock, self._path.open("a") as f:
            f.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool)) else str(v)


def setup_telemetry(settings: ServiceSettings) -> None:
    """Configure tracing and logging once per process, from settings."""
    global _configured
    if _configured:
        return
    _configured = True
    setup_logging(settings.service_name, settings.log_level, settings.log_format)
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    exporter = settings.otel_exporter
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    elif exporter == "file" and settings.otel_file is not None:
        # Simple (synchronous) so spans survive a kill -9 right after they end.
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(settings.otel_file)))
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError:
            logging.getLogger(__name__).warning(
                "HS_OTEL_EXPORTER=otlp but opentelemetry-exporter-otlp is not installed; "
                "traces are not exported"
            )
        else:
            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint))
            )
    trace.set_tracer_provider(provider)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject(headers: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Current trace context as message headers (W3C traceparent/tracestate)."""
    out: dict[str, str] = dict(headers or {})
    propagate.inject(out)
    return out


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the active trace and span ids for correlation."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        span = trace.get_current_span()
        ctx = span.get_span_context()
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if ctx.is_valid:
            doc["trace_id"] = f"{ctx.trace_id:032x}"
            doc["span_id"] = f"{ctx.span_id:016x}"
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            doc.update(extra)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter drowns the service's own lines at INFO.
    for noisy in ("nats", "asyncio", "urllib3", "botocore", "httpx", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
