from __future__ import annotations

from pydantic import AnyHttpUrl, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

DEV_JWT_SECRET = "dev-jwt-secret-change-me-before-any-real-use"  # noqa: S105 - the refused default


class GatewaySettings(ServiceSettings):
    # the gateway as clients reach it (https://yj.example.gov.cn, behind a proxy): the links the
    # services write (feeds, CAP documents) start with it; without it, with the request's own
    public_base_url: str | None = None
    model_config = SettingsConfigDict(env_prefix="QIANSHAO_GATEWAY_", extra="ignore", frozen=True)

    port: int = 8000
    ingest_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8001")
    risk_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8002")
    alerting_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8003")
    jwt_secret: str = DEV_JWT_SECRET
    access_token_ttl_s: int = Field(default=900, ge=60)
    upstream_timeout_s: float = 30.0
    # idempotent calls (GET, HEAD) are tried again this many times after a transport error
    upstream_retries: int = Field(default=2, ge=0, le=5)
    # circuit breaker per upstream service: consecutive failures to open, seconds open
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_open_s: float = Field(default=10.0, gt=0)
    pool_size: int = Field(default=100, ge=1)
    key_cache_ttl_s: float = 5.0
    # operators' refresh tokens; signed requests' accepted clock skew; key rotation overlap
    refresh_token_ttl_s: int = Field(default=7 * 86400, ge=300)
    signature_skew_s: float = Field(default=300.0, gt=0)
    key_rotation_overlap_s: float = Field(default=86400.0, ge=0)
    # requests per minute per principal and route class ("<service>:read|write", "auth:token"
    # per client address); a class not listed is not limited. JSON in the environment.
    rate_limits: dict[str, int] = Field(
        default_factory=lambda: {
            "ingest:write": 1200,
            "ingest:read": 1200,
            "risk:read": 1200,
            "risk:write": 120,
            "alerting:read": 1200,
            "alerting:write": 600,
            "auth:token": 30,
        }
    )
    # largest request body accepted (bytes)
    max_body_bytes: int = Field(default=16 << 20, ge=1024)
    # the whole body must arrive within this (slow clients)
    body_timeout_s: float = Field(default=30.0, gt=0)
    # origins allowed to call the API from a browser (CORS); empty: none
    cors_origins: list[str] = Field(default_factory=list)
    # the console's live updates: a comment this often keeps an idle stream open
    live_heartbeat_s: float = Field(default=15.0, gt=0)
    # an online base map for the console's map (天地图), only with a key; without one the map
    # draws the project's own data alone and no page request leaves the host
    tianditu_key: str | None = None

    def secret_fields(self) -> tuple[str, ...]:
        return ("internal_secret", "jwt_secret")
