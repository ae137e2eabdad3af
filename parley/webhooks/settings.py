"""Delivery settings (``PARLEY_WEBHOOK_*``), read by a settings model of their own like the SSRF guard's."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_WEBHOOK_", env_file=".env", extra="ignore")

    # 15 attempts 2 s … 300 s apart: a delivery gives up after about 33 minutes, so a receiver down for ten
    # minutes still gets everything, within five minutes of coming back
    max_attempts: int = Field(15, ge=1, le=100, description="attempts before a delivery gives up")
    backoff_base_s: float = Field(2.0, gt=0, description="wait after the first failure; doubles each time")
    backoff_max_s: float = Field(300.0, gt=0, description="the longest wait between two attempts")
    timeout_s: float = Field(10.0, gt=0, description="one attempt's limit (connect, send, answer)")
    poll_s: float = Field(1.0, gt=0, description="how often the worker looks for due deliveries")
    lease_s: float = Field(
        60.0, gt=0, description="how long a claimed delivery is this worker's alone (at least twice timeout_s)"
    )
    batch: int = Field(32, ge=1, le=500, description="deliveries claimed at once")

    def backoff(self, attempts: int) -> float:
        """The wait after ``attempts`` failed attempts: base, 2×base, 4×base … at most the maximum."""
        return float(min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, attempts - 1)))
