"""Gateway settings: the common fields plus the gateway's own, under the HS_GATEWAY_ prefix."""

from __future__ import annotations

from pydantic import SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings
from services.gateway.client_ip import TrustedProxies


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HS_GATEWAY_", extra="ignore")

    # REST bind address. Unset: the gRPC server's (HS_GRPC_HOST), so a pod, whose gRPC binds
    # 0.0.0.0, serves REST on its own address too, while dev and tests stay on loopback.
    http_host: str | None = None
    # REST (transcoded from the protos); 0 picks a free port, -1 turns REST off.
    http_port: int = 8080
    # Operator token for AdminService; unset = AdminService refuses every call.
    admin_token: SecretStr | None = None
    # Mixed into every API-key hash, kept outside the database (a Kubernetes Secret), so a
    # stolen table alone cannot be used to test guesses.
    key_pepper: SecretStr = SecretStr("")
    # Proxies in front of the gateway (ingress, load balancer) whose X-Forwarded-For is
    # believed, as comma-separated CIDRs, e.g. "10.0.0.0/8,fd00::/8". Empty: none, and the
    # failed-authentication throttle counts the direct peer (services/gateway/client_ip.py).
    trusted_proxies: str = ""

    # ---- per-tenant quotas (the platform's limits are services.policy.limits) ----
    requests_per_minute: int = 600
    max_orders_in_flight: int = 5
    # Stored photos are re-encoded from pixels at most this large (long side).
    stored_max_side: int = 1536
    stored_jpeg_quality: int = 92

    # ---- orchestration ----
    # A live order with no event for this long is checked for a lost job.
    stuck_after_s: float = 600.0
    # A job re-queued this many times without progress fails the order.
    max_requeues: int = 3
    # An order not READY this long after submission fails ("past its budget").
    order_budget_s: float = 6 * 3600.0
    reconcile_interval_s: float = 30.0
    # Calls to the filter (AnalyzeSelfies), generator (Preview) and retention (Erase).
    filter_timeout_s: float = 60.0
    preview_timeout_s: float = 60.0
    erase_timeout_s: float = 60.0
    watch_poll_s: float = 2.0

    @model_validator(mode="after")
    def _rest_binds_where_grpc_does(self) -> GatewaySettings:
        if self.http_host is None:
            self.http_host = self.grpc_host
        self.proxies()  # a bad CIDR stops the gateway at start, naming it
        return self

    def proxies(self) -> TrustedProxies:
        return TrustedProxies.parse(self.trusted_proxies.split(","))
