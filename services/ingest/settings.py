from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, DirectoryPath, Field, FilePath, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

SOURCE = r"^[A-Za-z0-9_.:\-]{1,64}$"


class MqttMetric(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    unit: str | None = Field(default=None, max_length=16)


class MqttSubscription(BaseModel):
    """A topic filter and how its payloads read (:mod:`services.ingest.domain.mqtt`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str = Field(min_length=1, max_length=256)
    form: Literal["qianshao", "thingsboard"] = "qianshao"
    source: str = Field(default="mqtt", pattern=SOURCE)
    # thingsboard: value key → metric (and the unit it is sent in); device name → station id
    metrics: dict[str, MqttMetric] = Field(default_factory=dict)
    devices: dict[str, str] = Field(default_factory=dict)


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
    # the 一张图: the share of enterprises that must be monitored online and are (the plans' KPI,
    # 高危企业在线监测率), and how far a shelter with no service radius of its own serves
    atlas_online_target: float = Field(default=0.85, gt=0, le=1)
    atlas_service_radius_m: int = Field(default=1000, ge=0, le=50_000)
    station_cache_ttl_s: float = 30.0
    # the SL 651-2014 receiver for hydrological and rain telemetry stations: TCP (and UDP) on
    # this port; none: off (one replica of ingest listens, or each on its own address)
    sl651_port: int | None = Field(default=None, ge=0, le=65535)
    sl651_host: str = "127.0.0.1"
    sl651_udp: bool = True
    # the source its readings come from (register it with auto_register to take new RTUs)
    sl651_source: str = Field(default="sl651", pattern=SOURCE)
    # the MQTT subscriber: gateways publish to a broker (Mosquitto); none: off. QoS 1, a
    # persistent session under ``mqtt_client_id`` (one id a replica; several replicas share
    # the work with ``$share/<group>/<filter>`` topics), a message acknowledged only once its
    # readings are on the raw topic
    mqtt_host: str | None = None
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_client_id: str = Field(default="qianshao-ingest", min_length=1, max_length=64)
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    # TLS: on with a CA file (and a client certificate and key when the broker asks for one)
    mqtt_tls: bool = False
    mqtt_ca_file: FilePath | None = None
    mqtt_cert_file: FilePath | None = None
    mqtt_key_file: FilePath | None = None
    mqtt_keepalive_s: int = Field(default=30, ge=5)
    # reconnecting waits from the first to the second, doubling each time
    mqtt_reconnect_min_s: int = Field(default=1, ge=1)
    mqtt_reconnect_max_s: int = Field(default=60, ge=1)
    mqtt_subscriptions: list[MqttSubscription] = Field(
        default_factory=lambda: [
            MqttSubscription(topic="qianshao/readings/#"),
            MqttSubscription(topic="v1/gateway/telemetry", form="thingsboard"),
        ]
    )
    # coal-mine networking files (定义 and 实时数据) dropped into this directory (the FTP
    # landing place); none: off. Which field maps read them (coalmine_maps/*.json, and the
    # JSON maps in coalmine_map_dir), the region of each mine code (else coalmine_region_code)
    coalmine_dir: DirectoryPath | None = None
    coalmine_maps: list[str] = Field(default_factory=lambda: ["national", "liupanshui-2013"])
    coalmine_map_dir: DirectoryPath | None = None
    coalmine_mines: dict[str, str] = Field(default_factory=dict)
    coalmine_region_code: str | None = Field(default=None, pattern=r"^[0-9]{12}$")
    coalmine_source: str = Field(default="coalmine", pattern=SOURCE)
    coalmine_scan_s: float = Field(default=2.0, gt=0)
    # a file is read once unchanged this long; one never ended by '~' after coalmine_abandon_s
    # is read as it is
    coalmine_settle_s: float = Field(default=1.0, ge=0)
    coalmine_abandon_s: float = Field(default=600.0, gt=0)
    # the compiled encoders of the consumer's kernel (COPY stream, readings.v1 events); false:
    # their Python twins, which give the same bytes (the checks are compiled either way)
    native: bool = True
