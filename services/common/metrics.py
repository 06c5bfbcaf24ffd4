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
JOB_RETRIES = Counter(
    "hs_job_retries_total",
    "Jobs handed back for a later try, by cause (dependency = a dependency was down)",
    ["service", "subject", "cause"],
)
DEAD_LETTERS_WAITING = Gauge(
    "hs_dead_letters_waiting", "Dead letters now in the dead-letter stream, by cause", ["cause"]
)
DEAD_LETTERS_CLEARED = Counter(
    "hs_dead_letters_cleared_total",
    "Dead letters removed because their order ended READY or no longer exists",
    ["cause"],
)
CONSUMER_STALLED = Gauge(
    "hs_consumer_stalled",
    "1 when a durable consumer has work and no live worker (no pull waiting, no delivery"
    " or in-progress ack for longer than its ack wait)",
    ["stream", "consumer"],
)
CONSUMER_WAITING_PULLS = Gauge(
    "hs_consumer_waiting_pulls",
    "Pull requests waiting on a durable consumer",
    ["stream", "consumer"],
)
RECONCILED = Counter(
    "hs_reconciler_orders_total",
    "Orders the reconciler acted on or saw stuck, by action",
    ["action"],
)
STUCK_ORDERS = Gauge("hs_stuck_orders", "In-flight orders with no event for the stuck time")
DELETIONS = Counter("hs_deletions_total", "Objects deleted by retention", ["data_class", "trigger"])


def start_metrics_server(port: int, host: str = "127.0.0.1") -> int:
    """Serve /metrics on `host` (HS_METRICS_HOST); returns the bound port (0 picks one)."""
    server, _thread = start_http_server(port, addr=host)
    bound = int(server.server_port)
    log.info("metrics on %s:%d/metrics", host, bound)
    return bound
