"""The scheduler's settings (``PARLEY_CAMPAIGN_*``), a settings model of its own like the webhooks'.

Read through ``Settings.section(CampaignSettings)``, so ``Settings(campaign_tick_s=0.1)`` configures it too.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CampaignSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", env_file=".env", extra="ignore")

    campaigns_enabled: bool = Field(True, description="false: this worker runs no campaign scheduler")
    campaign_tenant_max_concurrent: int = Field(
        20, ge=1, le=10_000, description="campaign calls under way at once per tenant, over all its campaigns"
    )
    campaign_tick_s: float = Field(1.0, gt=0, le=60, description="how often the scheduler looks for due contacts")
    campaign_lost_after_s: float = Field(
        60.0, gt=0, description="an attempt whose call record has not appeared by then was lost (dial_lost)"
    )
    campaign_stale_dialing_s: float = Field(
        300.0, gt=0, description="a call record still 'dialing' this long after its attempt began was lost"
    )
