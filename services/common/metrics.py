"""Prometheus metrics shared by every service (one name per fact, labelled by service).

Listed in the README; scraped from `/metrics` on HS_METRICS_PORT.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

RPCS = Counter("hs_grpc_requests_total", "gRPC requests handled", ["service", "method", "code"])
RPC_SECONDS = Histogram("hs_grpc_request_seconds", "gRPC request latency", ["service", "method"])
JOBS_IN_FLIGHT = Gauge("hs_jobs_in_flight", "Jobs being handled now", ["service", "subject"])
JOBS = Counter("hs_jobs_total", "Jobs finished, by outcome", ["service", "subject", "outcome"])
JOB_SECONDS = Histogram(
    "hs_job_seconds",
    "Time inside a job handler",
    ["service", "subject"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
QUEUE_LAG = Gauge(
    "hs_queue_lag", "JetStream consumer lag (pending + unacked)", ["stream", "consumer"]
)
IMAGES = Counter("hs_images_total", "Images generated or scored", ["service", "kind"])
REJECTIONS = Counter("hs_rejections_total", "Candidates rejected, by reason", ["reason"])
GPU_SECONDS = Counter("hs_gpu_seconds_total", "Accelerator seconds spent, by stage", ["stage"])
MODEL_SECONDS = Counter(
    "hs_model_seconds_total", "Seconds inside model calls", ["service", "model"]
)
ORDER_STAGE_SECONDS = Histogram(
    "hs_order_stage_seconds",
    "Order time per stage",
    ["stage"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 3600, 7200),
)
ORDERS = Counter("hs_orders_total", "Orders reaching a terminal state", ["state"])
DEAD_LETTERS = Counter("hs_dead_letters_total", "Jobs moved to the dead-letter stream", ["subject"])
DELETIONS = Counter("hs_deletions_total", "Objects deleted by retention", ["data_class", "trigger"])


def start_metrics_server(port: int, host: str = "0.0.0.0") -> int:
    """Serve /metrics; returns the bound port (port 0 picks a free one)."""
    server, _thread = start_http_server(port, addr=host)
    bound = int(server.server_port)
    log.info("metrics on :%d/metrics", bound)
    return bound
