from __future__ import annotations

from typing import Literal

from pydantic import Field, FilePath
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QIANSHAO_INGEST_", extra="ignore", frozen=True)

    port: int = 8001
    # PEM certificates of the authorities whose signatures on upstream CAP the bureau trusts;
    # without them a signed message must verify against the certificate it carries
    cap_trusted_ca_file: FilePath | None = None
    storage: Literal["auto", "timescale", "native"] = "auto"
    topic_prefix: str = ""
    consumer_group: str = "ingest"
    run_consumer: bool = True
    max_batch_items: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=16 << 20, ge=1024)
    future_tolerance_s: int = 300
    # raw readings are kept this long; the hourly and daily roll-ups much longer
    retention_days: int = Field(default=180, ge=1)
    rollup_retention_days: int = Field(default=3650, ge=1)
    # plain PostgreSQL: how often the roll-ups of newly stored readings are recomputed
    rollup_refresh_s: float = Field(default=30.0, gt=0)
    # plain PostgreSQL: the hour still filling is re-aggregated at most this often (each time
    # reads all of its rows); finished hours, late data included, at every refresh
    rollup_current_hour_s: float = Field(default=300.0, ge=0)
    # a station is offline when silent for more than this × its reporting interval; the sweep
    # that announces changes runs this often (0: not at all)
    offline_factor: float = Field(default=3.0, gt=0)
    health_sweep_s: float = Field(default=30.0, ge=0)
    station_cache_ttl_s: float = 30.0
    # the compiled encoders of the consumer's kernel (COPY stream, readings.v1 events); false:
    # their Python twins, which give the same bytes (the checks are compiled either way)
    native: bool = True
