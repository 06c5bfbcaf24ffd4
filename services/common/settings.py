"""One typed settings object per service, read from environment variables.

Common fields have fixed names (HS_NATS_URL, DATABASE_URL, ...). Each service subclasses
`ServiceSettings` and sets its own `env_prefix` (e.g. HS_TRAINER_) for its own fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclasses add theirs under their own prefix."""

    model_config = SettingsConfigDict(env_prefix="HS_", extra="ignore", populate_by_name=True)

    service_name: str = Field("headshots", validation_alias=_env("HS_SERVICE_NAME"))
    grpc_host: str = Field("127.0.0.1", validation_alias=_env("HS_GRPC_HOST"))
    grpc_port: int = Field(0, validation_alias=_env("HS_GRPC_PORT"))
    # Prometheus /metrics; 0 picks a free port (written to the log at start). Loopback by
    # default like the gRPC port; a pod sets 0.0.0.0 so Prometheus can scrape it.
    metrics_host: str = Field("127.0.0.1", validation_alias=_env("HS_METRICS_HOST"))
    metrics_port: int = Field(0, validation_alias=_env("HS_METRICS_PORT"))
    # Job retries while a dependency (PostgreSQL, NATS, blob store) is down: exponential
    # backoff from `base` to `cap` seconds with jitter, given up after `budget` seconds.
    retry_budget_s: float = Field(300.0, validation_alias=_env("HS_RETRY_BUDGET_SECONDS"))
    retry_base_s: float = Field(0.5, validation_alias=_env("HS_RETRY_BASE_SECONDS"))
    retry_cap_s: float = Field(15.0, validation_alias=_env("HS_RETRY_CAP_SECONDS"))
    # Empty: an embedded PostgreSQL is started (demo and tests only).
    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL", "HS_DATABASE_URL"))
    nats_url: str = Field("nats://127.0.0.1:4222", validation_alias=_env("HS_NATS_URL", "NATS_URL"))
    # file:///abs/path or s3://bucket/prefix
    blob_url: str = Field("file://./var/blobs", validation_alias=_env("HS_BLOB_URL"))
    s3_endpoint_url: str | None = Field(None, validation_alias=_env("HS_S3_ENDPOINT_URL"))
    # base64 of 32 random bytes; wraps the per-order data keys. A Kubernetes Secret in production.
    master_key: SecretStr | None = Field(None, validation_alias=_env("HS_MASTER_KEY"))
    master_key_id: str = Field("master-1", validation_alias=_env("HS_MASTER_KEY_ID"))
    models_dir: Path = Field(Path("var/models"), validation_alias=_env("HS_MODELS_DIR"))
    log_level: str = Field("INFO", validation_alias=_env("HS_LOG_LEVEL"))
    log_format: Literal["json", "text"] = Field("json", validation_alias=_env("HS_LOG_FORMAT"))
    # none | console | otlp | memory (tests)
    otel_exporter: Literal["none", "console", "otlp", "memory", "file"] = Field(
        "none", validation_alias=_env("HS_OTEL_EXPORTER")
    )
    otel_endpoint: str | None = Field(None, validation_alias=_env("OTEL_EXPORTER_OTLP_ENDPOINT"))
    # file exporter: spans appended as JSON lines (used by the e2e trace test)
    otel_file: Path | None = Field(None, validation_alias=_env("HS_OTEL_FILE"))
    # Apply this service's database migrations at start (dev, tests, single-role installs).
    # False in production: a Job with the schema-owning role migrates and the services, which
    # connect with a DML-only role, wait for the schema to be at their head revision.
    migrate_on_start: bool = Field(True, validation_alias=_env("HS_MIGRATE_ON_START"))
    # JetStream stream replicas: 1 for the embedded server, 3 on a clustered NATS (R3).
    jetstream_replicas: int = Field(1, validation_alias=_env("HS_JETSTREAM_REPLICAS"))
    # Seconds between SIGTERM and exit: finish or hand back work inside this.
    shutdown_grace_seconds: float = Field(20.0, validation_alias=_env("HS_SHUTDOWN_GRACE_SECONDS"))
    # Internal service addresses (host:port)
    filter_addr: str = Field("127.0.0.1:50053", validation_alias=_env("HS_FILTER_ADDR"))
    generator_addr: str = Field("127.0.0.1:50052", validation_alias=_env("HS_GENERATOR_ADDR"))
    retention_addr: str = Field("127.0.0.1:50055", validation_alias=_env("HS_RETENTION_ADDR"))
