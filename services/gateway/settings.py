"""Gateway settings: the common fields plus the gateway's own, under the HS_GATEWAY_ prefix."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HS_GATEWAY_", extra="ignore")

    http_host: str = "127.0.0.1"
    # REST (transcoded from the protos); 0 picks a free port, -1 turns REST off.
    http_port: int = 8080
    # Operator token for AdminService; unset = AdminService refuses every call.
    admin_token: SecretStr | None = None
    # Mixed into every API-key hash, kept outside the database (a Kubernetes Secret), so a
    # stolen table alone cannot be used to test guesses.
    key_pepper: SecretStr = SecretStr("")

    # ---- limits (per tenant unless the tenant row overrides) ----
    requests_per_minute: int = 600
    max_orders_in_flight: int = 5
    min_photos: int = 8
    max_photos: int = 20
    max_result_count: int = 200
    max_candidate_count: int = 1000
    default_result_count: int = 100
    default_candidate_count: int = 64
    # Upload safety: bytes are counted before anything is decoded.
    max_photo_bytes: int = 20 * 1024 * 1024
    max_photo_pixels: int = 50_000_000
    min_photo_side: int = 160
    # Stored photos are re-encoded from pixels at most this large (long side).
    stored_max_side: int = 1536
    stored_jpeg_quality: int = 92
    max_custom_prompt_chars: int = 200

    # ---- orchestration ----
    # Rounds of generation at most (round 0 + top-ups) and candidates at most per order,
    # as a multiple of the order's candidate_count.
    max_rounds: int = 3
    max_candidates_factor: float = 2.5
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
    default_photo_retention_days: int = 7
    max_photo_retention_days: int = 30
