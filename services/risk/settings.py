from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class RiskSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QIANSHAO_RISK_", extra="ignore", frozen=True)

    port: int = 8002
    topic_prefix: str = ""
    consumer_group: str = "risk"
    run_consumer: bool = True
    station_cache_ttl_s: float = 30.0
    outbox_poll_s: float = 1.0
    # readings up to this late still update the sliding windows
    late_tolerance_s: float = 3600.0
    # a station silent for more than factor × its interval raises no-data; 0 turns the sweep off
    nodata_factor: float = 3.0
    nodata_sweep_s: float = 30.0
    # every this many seconds risk re-announces each standing level and county roll-up
    # (``change="standing"``); alerting renews or expires warnings by them. 0 turns it off
    standing_every_s: float = 900.0
