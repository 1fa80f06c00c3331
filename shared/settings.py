"""Typed settings read from the environment, one prefix per service.

Every service's settings class derives from :class:`ServiceSettings` and sets its own prefix, e.g.
``QIANSHAO_INGEST_DATABASE_URL``. Start-up refuses a default secret outside development.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PostgresDsn, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.kafka.client import (
    Compression,
    KafkaConfigError,
    KafkaConnection,
    SaslMechanism,
    SecurityProtocol,
)

DEV_INTERNAL_SECRET = "dev-internal-secret-change-me-before-real-use"  # noqa: S105 - the refused default

Environment = Literal["development", "test", "production"]


class ServiceSettings(BaseSettings):
    """What every service needs: where PostgreSQL and Kafka are, and how to sign identities."""

    model_config = SettingsConfigDict(env_prefix="QIANSHAO_", extra="ignore", frozen=True)

    environment: Environment = "development"
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int = 8000

    database_url: PostgresDsn = Field(
        default=PostgresDsn("postgresql://qianshao@127.0.0.1:5432/qianshao")
    )
    db_pool_min: int = Field(default=1, ge=1)
    db_pool_max: int = Field(default=10, ge=1)

    kafka_bootstrap: str = "127.0.0.1:9092"
    # "auto" asks the broker for a producer id and falls back to plain acks=all when the broker
    # (the local Tansu broker, for one) refuses; "on" makes that refusal fatal, as in production.
    kafka_idempotence: Literal["auto", "on", "off"] = "auto"
    kafka_client_id: str = "qianshao"
    # a secured cluster: TLS (the cluster's CA, a client certificate for mutual TLS) and SASL
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_check_hostname: bool = True
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    # what the producers compress record batches with (lz4 and zstd: the cramjam package)
    kafka_compression: Compression = "none"

    # Allocations between young-generation collections of Python's cycle collector (0 keeps
    # Python's 700). A consumer batch (up to 20,000 messages) allocates ~10 objects a message, all
    # alive until the batch ends, and every young collection walks them: at 700 the collector ran
    # hundreds of times a batch (a third of the ingest consumer's time, bench/ingest), and at
    # 50,000 it still took ~2 µs a reading; at 200,000, about one collection a batch, ~0.3 µs.
    # Reference counting frees everything acyclic at once; only cycles wait. Objects made at
    # start-up are frozen out of collection as well (see shared.runtime.tune_gc).
    gc_threshold: int = Field(default=200_000, ge=0)

    # HMAC key for the internal identity the gateway signs and every service checks.
    internal_secret: str = DEV_INTERNAL_SECRET

    @model_validator(mode="after")
    def _kafka_settings_work(self) -> ServiceSettings:
        try:
            self.kafka()
        except KafkaConfigError as exc:
            raise ValueError(str(exc)) from exc
        return self

    def kafka(self) -> KafkaConnection:
        """How this service's Kafka clients connect."""
        return KafkaConnection(
            self.kafka_bootstrap,
            security_protocol=self.kafka_security_protocol,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            ssl_check_hostname=self.kafka_ssl_check_hostname,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            compression=self.kafka_compression,
        )

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> ServiceSettings:
        if self.environment == "production":
            prefix = str(self.model_config.get("env_prefix", "")).upper()
            weak = [
                f"{name} ({prefix}{name.upper()})"
                for name in self.secret_fields()
                if _weak(getattr(self, name))
            ]
            if weak:
                raise ValueError(
                    f"{', '.join(weak)}: a default or weak value (under 32 characters); "
                    "set a real secret in production"
                )
        return self

    def secret_fields(self) -> tuple[str, ...]:
        return ("internal_secret",)

    @property
    def dsn(self) -> str:
        return str(self.database_url)


def _weak(value: object) -> bool:
    return value is None or value == "" or "dev-" in str(value) or len(str(value)) < 32
