from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class AlertingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QIANSHAO_ALERTING_", extra="ignore", frozen=True)

    port: int = 8003
    topic_prefix: str = ""
    consumer_group: str = "alerting"
    run_consumer: bool = True
    run_delivery: bool = True
    # a warning covers the stations of one region at this level of the division code
    group_admin_level: Literal["village", "township", "county"] = "township"
    # GB/T 35965.1 sender code: 6-digit division code + 3-digit organisation code + serial
    sender_code: str = Field(default="110101000000", pattern=r"^\d{6}\d{3}\d+$")
    sender_name: str = "Qianshao demo bureau"
    delivery_batch: int = Field(default=200, ge=1)
    delivery_concurrency: int = Field(default=50, ge=1)
    delivery_poll_s: float = 0.5
    delivery_timeout_s: float = 5.0
    max_attempts: int = Field(default=8, ge=1)
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    lease_s: float = 60.0
