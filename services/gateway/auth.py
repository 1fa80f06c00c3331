"""Authentication at the gateway: API keys for upstream platforms, JWTs for operators, and the
role → scope table that every service's checks rely on."""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError

from shared.errors import Conflict, Unauthenticated
from shared.identity import Identity

READ_SCOPES = [
    "stations:read",
    "readings:read",
    "risk:read",
    "warnings:read",
    "subscriptions:read",
    "recipients:read",
    "silences:read",
]

ROLE_SCOPES: dict[str, list[str]] = {
    "admin": [
        *READ_SCOPES,
        "stations:write",
        "readings:write",
        "rules:write",
        "warnings:write",
        "warnings:approve",
        "warnings:publish",
        "subscriptions:write",
        "recipients:write",
        "silences:write",
        "confirmations:write",
        "audit:read",
        "clients:write",
    ],
    # approving a publication also needs the approver role itself (checked by alerting)
    "approver": [*READ_SCOPES, "warnings:approve", "warnings:write", "audit:read"],
    "duty_officer": [
        *READ_SCOPES,
        "warnings:write",
        "warnings:publish",
        "confirmations:write",
        "silences:write",
        "recipients:write",
    ],
    "viewer": list(READ_SCOPES),
    "upstream_platform": ["readings:write", "stations:read", "upstream_warnings:write"],
}

_hasher = PasswordHasher()


def scopes_for(roles: list[str]) -> list[str]:
    out: list[str] = []
    for role in roles:
        for s in ROLE_SCOPES.get(role, []):
            if s not in out:
                out.append(s)
    return out


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_api_key() -> str:
    return "qs_" + secrets.token_urlsafe(32)


async def create_api_client(
    pool: asyncpg.Pool,
    *,
    client_id: str,
    name: str,
    scopes: list[str] | None = None,
    sources: list[str] | None = None,
    region_prefix: str = "",
    key: str | None = None,
) -> str:
    """Create a client and return its key (shown once; only the digest is stored)."""
    key = key or new_api_key()
    try:
        await pool.execute(
            """INSERT INTO gateway.api_clients
                   (id, name, key_prefix, key_hash, scopes, sources, region_prefix)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            client_id,
            name,
            key[:8],
            key_digest(key),
            scopes if scopes is not None else ROLE_SCOPES["upstream_platform"],
            sources or [],
            region_prefix,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"api client {client_id!r} exists") from exc
    return key


async def create_operator(
    pool: asyncpg.Pool, *, username: str, password: str, roles: list[str], region_prefix: str = ""
) -> None:
    await pool.execute(
        """INSERT INTO gateway.operators (username, password_hash, roles, region_prefix)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash,
               roles = EXCLUDED.roles, region_prefix = EXCLUDED.region_prefix""",
        username,
        _hasher.hash(password),
        roles,
        region_prefix,
    )


class Authenticator:
    def __init__(
        self, pool: asyncpg.Pool, *, jwt_secret: str, token_ttl_s: int, key_cache_ttl_s: float
    ) -> None:
        self._pool = pool
        self._jwt_secret = jwt_secret
        self._ttl = token_ttl_s
        self._cache_ttl = key_cache_ttl_s
        self._keys: dict[bytes, tuple[float, Identity | None]] = {}

    async def from_api_key(self, key: str, now: datetime) -> Identity:
        digest = key_digest(key)
        hit = self._keys.get(digest)
        mono = time.monotonic()
        if hit is not None and hit[0] > mono:
            ident = hit[1]
        else:
            row = await self._pool.fetchrow(
                """UPDATE gateway.api_clients SET last_used_at = $2
                    WHERE key_hash = $1 AND revoked_at IS NULL
                      AND (expires_at IS NULL OR expires_at > $2)
                RETURNING id, roles, scopes, sources, region_prefix""",
                digest,
                now,
            )
            ident = None
            if row is not None:
                ident = Identity(
                    subject=f"client:{row['id']}",
                    kind="api_client",
                    roles=list(row["roles"]),
                    scopes=list(row["scopes"]),
                    sources=list(row["sources"]),
                    region_prefix=row["region_prefix"],
                )
            self._keys[digest] = (mono + self._cache_ttl, ident)
        if ident is None:
            raise Unauthenticated("unknown, revoked or expired API key")
        return ident

    async def login(self, username: str, password: str, now: datetime) -> dict[str, Any]:
        row = await self._pool.fetchrow(
            """SELECT password_hash, roles, region_prefix FROM gateway.operators
                WHERE username = $1 AND NOT disabled""",
            username,
        )
        try:
            if row is None:
                raise VerifyMismatchError
            _hasher.verify(row["password_hash"], password)
        except (VerifyMismatchError, InvalidHashError) as exc:
            raise Unauthenticated("wrong username or password") from exc
        claims = {
            "sub": username,
            "roles": list(row["roles"]),
            "region": row["region_prefix"],
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self._ttl)).timestamp()),
            "typ": "access",
        }
        token = jwt.encode(claims, self._jwt_secret, algorithm="HS256")
        return {"access_token": token, "token_type": "bearer", "expires_in": self._ttl}

    def from_jwt(self, token: str, now: datetime) -> Identity:
        try:
            claims = jwt.decode(
                token,
                self._jwt_secret,
                algorithms=["HS256"],
                options={"require": ["exp", "sub"], "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid token") from exc
        if claims.get("typ") != "access" or int(claims["exp"]) <= now.timestamp():
            raise Unauthenticated("token expired")
        roles = [r for r in claims.get("roles", []) if r in ROLE_SCOPES]
        return Identity(
            subject=f"operator:{claims['sub']}",
            kind="operator",
            roles=roles,
            scopes=scopes_for(roles),
            region_prefix=str(claims.get("region", "")),
        )
