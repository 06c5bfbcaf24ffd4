"""Retention settings (env prefix HS_RETENTION_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class RetentionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HS_RETENTION_", extra="ignore")

    sweep_interval_s: float = 30.0
    # Shifts the sweeper's clock forward (operators' dry runs, e2e tests); never in production.
    clock_offset_days: float = 0.0
    # Slows each sweep step down; only for the crash-mid-sweep test.
    debug_step_delay_s: float = 0.0
    erase_timeout_s: float = 10.0
