"""What every gateway route asks of a request before it acts: who is calling (an API key, a signed
request or a bearer token), whether they are within their rate limit, and for client
administration, whether they are a province-wide admin."""

from __future__ import annotations

from fastapi import Request

from services.gateway.adapters.auth import Authenticator
from services.gateway.adapters.upstreams import BodyTooLarge, read_body, too_large
from services.gateway.domain.ratelimit import Leases
from services.gateway.domain.signing import SCHEME
from services.gateway.settings import GatewaySettings
from shared.clock import Clock
from shared.errors import PermissionDenied, Unauthenticated
from shared.identity import Identity


class Limited(Exception):
    """Over the rate limit: answered 429 with ``Retry-After``."""

    def __init__(self, retry_after_s: int, per_min: int) -> None:
        self.retry_after_s = retry_after_s
        self.per_min = per_min


def client_address(request: Request) -> str:
    return f"ip:{request.client.host if request.client else '?'}"


class Guard:
    def __init__(self, settings: GatewaySettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock

    async def limit(self, request: Request, key: str, route_class: str) -> None:
        per_min = self._settings.rate_limits.get(route_class)
        if per_min is None:
            return
        limits: Leases = request.app.state.limits
        decision = await limits.check(f"{key}|{route_class}", per_min, self._clock.now())
        if not decision.allowed:
            raise Limited(decision.retry_after_s, per_min)

    async def authenticate(
        self, request: Request, *, signed_body: bool
    ) -> tuple[Identity, bytes | None]:
        """The caller and, for a signed request, the body the signature covered."""
        auth: Authenticator = request.app.state.auth
        settings, now = self._settings, self._clock.now()
        key = request.headers.get("x-api-key")
        header = request.headers.get("authorization")
        if key is not None and header is not None:
            # one credential per request (as RFC 6750 asks of bearer tokens): with two, which
            # one speaks is a guess, and a bad one beside a good one must not pass unseen
            raise Unauthenticated(
                "send one credential: an API key (X-API-Key), a signed request or a bearer "
                "token, not two"
            )
        if key is not None:
            if not key:
                raise Unauthenticated("the X-API-Key header is empty")
            return await auth.from_api_key(key, now), None
        header = header or ""
        if header.startswith(SCHEME + " "):
            if too_large(request, settings.max_body_bytes):
                raise BodyTooLarge
            body = (
                await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
                if signed_body
                else b""
            )
            ident = await auth.from_signature(
                header,
                method=request.method,
                path=request.scope["path"],
                query=request.scope.get("query_string", b"").decode("latin-1"),
                body=body,
                now=now,
            )
            return ident, body
        if header.lower().startswith("bearer "):
            return auth.from_jwt(header[7:].strip(), now), None
        raise Unauthenticated("send an API key (X-API-Key), a signed request or a bearer token")

    async def admin(self, request: Request) -> Identity:
        """A province-wide admin, who alone manages API clients."""
        identity, _ = await self.authenticate(request, signed_body=False)
        identity.require_scope("clients:write")
        if identity.region_prefix:
            raise PermissionDenied("API clients are managed by a province-wide admin")
        return identity
