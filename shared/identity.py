"""The internal identity: who is calling, signed by the gateway, checked again by every service.

The gateway authenticates the caller (API key or operator JWT), then forwards the request with an
``X-Qianshao-Identity`` header: ``base64url(json) "." base64url(hmac_sha256(json))`` with a short
expiry. A service accepts only a header whose signature verifies with the shared internal secret,
so an identity header written by a client is refused even if the client reaches a service directly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import PermissionDenied, Unauthenticated

HEADER = "X-Qianshao-Identity"

Role = Literal["admin", "approver", "duty_officer", "viewer", "upstream_platform"]


class Identity(BaseModel):
    model_config = ConfigDict(frozen=True)

    subject: str
    kind: Literal["api_client", "operator", "service"]
    roles: list[Role] = Field(default_factory=list)
    scopes: list[str] = Field(default_factory=list)
    region_prefix: str = Field(default="", pattern=r"^\d{0,12}$")
    sources: list[str] = Field(default_factory=list, description="upstream sources it may push as")
    exp: int = 0

    def can_see_region(self, region_code: str) -> bool:
        return region_code.startswith(self.region_prefix)

    def narrow(self, requested_prefix: str) -> str:
        """The region prefix to filter by: the one asked for when it lies inside the caller's
        scope, otherwise the caller's own scope (a filter never widens it)."""
        if requested_prefix.startswith(self.region_prefix):
            return requested_prefix
        return self.region_prefix

    def require_scope(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.roles:
            raise PermissionDenied(f"missing scope {scope!r}")

    def require_region(self, region_code: str) -> None:
        if not self.can_see_region(region_code):
            raise PermissionDenied(f"region {region_code} is outside your scope")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(identity: Identity, secret: str, now: datetime, ttl_s: int = 60) -> str:
    body = identity.model_copy(update={"exp": int((now + timedelta(seconds=ttl_s)).timestamp())})
    payload = orjson.dumps(body.model_dump(mode="json"))
    mac = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify(header: str | None, secret: str, now: datetime) -> Identity:
    if not header:
        raise Unauthenticated("no internal identity; call through the gateway")
    try:
        payload_b64, mac_b64 = header.split(".", 1)
        payload = _unb64(payload_b64)
        mac = _unb64(mac_b64)
    except (ValueError, TypeError) as exc:
        raise Unauthenticated("malformed internal identity") from exc
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise Unauthenticated("internal identity signature does not verify")
    try:
        identity = Identity.model_validate_json(payload)
    except ValidationError as exc:
        raise Unauthenticated("malformed internal identity") from exc
    if identity.exp < now.timestamp():
        raise Unauthenticated("internal identity expired")
    return identity
