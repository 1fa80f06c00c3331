from __future__ import annotations

from pydantic import AnyHttpUrl, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

DEV_JWT_SECRET = "dev-jwt-secret-change-me-before-any-real-use"  # noqa: S105 - the refused default


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QIANSHAO_GATEWAY_", extra="ignore", frozen=True)

    port: int = 8000
    ingest_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8001")
    risk_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8002")
    alerting_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8003")
    jwt_secret: str = DEV_JWT_SECRET
    access_token_ttl_s: int = Field(default=900, ge=60)
    upstream_timeout_s: float = 30.0
    pool_size: int = Field(default=100, ge=1)
    key_cache_ttl_s: float = 5.0

    def secret_fields(self) -> tuple[str, ...]:
        return ("internal_secret", "jwt_secret")
