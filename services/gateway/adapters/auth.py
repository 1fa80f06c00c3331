"""Authentication at the gateway: API keys (plain or signed) for upstream platforms, JWTs with
rotating refresh tokens for operators. The roles and their scopes are
:mod:`services.gateway.domain.credentials`."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError

from services.gateway.domain import signing
from services.gateway.domain.credentials import (
    ROLE_SCOPES,
    key_digest,
    new_api_key,
    new_key_id,
    scopes_for,
)
from shared.db import Conn
from shared.errors import Conflict, NotFound, Unauthenticated
from shared.identity import Identity

_hasher = PasswordHasher()


async def add_key(
    conn: asyncpg.Pool | Conn,
    client_id: str,
    key: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, str]:
    """A new key for the client: (key id, key). The key is shown once; its digest is stored."""
    key = key or new_api_key()
    key_id = new_key_id()
    await conn.execute(
        """INSERT INTO gateway.api_keys (id, client_id, key_prefix, key_hash, expires_at)
           VALUES ($1, $2, $3, $4, $5)""",
        key_id,
        client_id,
        key[:8],
        key_digest(key),
        expires_at,
    )
    return key_id, key


async def create_api_client(
    pool: asyncpg.Pool,
    *,
    client_id: str,
    name: str,
    scopes: list[str] | None = None,
    sources: list[str] | None = None,
    region_prefix: str = "",
    key: str | None = None,
    require_signature: bool = False,
) -> tuple[str, str]:
    """Create a client with its first key: (key id, key); the key is shown once."""
    async with pool.acquire() as conn, conn.transaction():
        try:
            await conn.execute(
                """INSERT INTO gateway.api_clients
                       (id, name, scopes, sources, region_prefix, require_signature)
                   VALUES ($1, $2, $3, $4, $5, $6)""",
                client_id,
                name,
                scopes if scopes is not None else ROLE_SCOPES["upstream_platform"],
                sources or [],
                region_prefix,
                require_signature,
            )
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"api client {client_id!r} exists") from exc
        return await add_key(conn, client_id, key)


async def rotate_key(
    pool: asyncpg.Pool, client_id: str, *, overlap_s: float, now: datetime
) -> dict[str, Any]:
    """Issue a new key; every older live key of the client expires after the overlap (or at its
    own earlier expiry). Platforms switch to the new key within the overlap."""
    async with pool.acquire() as conn, conn.transaction():
        exists = await conn.fetchval(
            "SELECT true FROM gateway.api_clients WHERE id = $1 FOR UPDATE", client_id
        )
        if not exists:
            raise NotFound(f"no api client {client_id!r}")
        until = now + timedelta(seconds=overlap_s)
        old = await conn.fetch(
            """UPDATE gateway.api_keys SET expires_at = least(coalesce(expires_at, $2), $2)
                WHERE client_id = $1 AND revoked_at IS NULL
                  AND (expires_at IS NULL OR expires_at > $3)
            RETURNING id""",
            client_id,
            until,
            now,
        )
        key_id, key = await add_key(conn, client_id)
    return {
        "key_id": key_id,
        "key": key,
        "old_keys_expire_at": until.isoformat() if old else None,
        "old_key_ids": [r["id"] for r in old],
    }


async def revoke_key(pool: asyncpg.Pool, client_id: str, key_id: str, now: datetime) -> None:
    done = await pool.fetchval(
        """UPDATE gateway.api_keys SET revoked_at = $3
            WHERE client_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING true""",
        client_id,
        key_id,
        now,
    )
    if not done:
        raise NotFound(f"no live key {key_id!r} of {client_id!r}")


async def list_clients(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Clients and their keys, without any secret (ids, prefixes, dates, last use)."""
    rows = await pool.fetch(
        """SELECT c.id, c.name, c.roles, c.scopes, c.sources, c.region_prefix,
                  c.require_signature, c.revoked_at,
                  coalesce(json_agg(json_build_object(
                      'key_id', k.id, 'prefix', k.key_prefix, 'created_at', k.created_at,
                      'expires_at', k.expires_at, 'revoked_at', k.revoked_at,
                      'last_used_at', k.last_used_at) ORDER BY k.created_at)
                    FILTER (WHERE k.id IS NOT NULL), '[]') AS keys
             FROM gateway.api_clients c LEFT JOIN gateway.api_keys k ON k.client_id = c.id
            GROUP BY c.id ORDER BY c.id"""
    )
    # json columns arrive decoded (shared.db sets the codec)
    return [dict(r) for r in rows]


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


async def add_operator(
    pool: asyncpg.Pool, *, username: str, password: str, roles: list[str], region_prefix: str = ""
) -> None:
    """A new operator; :class:`Conflict` when the name is taken."""
    unknown = set(roles) - set(ROLE_SCOPES)
    if unknown:
        raise Conflict(f"unknown roles: {sorted(unknown)}; known: {sorted(ROLE_SCOPES)}")
    done = await pool.fetchval(
        """INSERT INTO gateway.operators (username, password_hash, roles, region_prefix)
           VALUES ($1, $2, $3, $4) ON CONFLICT (username) DO NOTHING RETURNING true""",
        username,
        _hasher.hash(password),
        roles,
        region_prefix,
    )
    if not done:
        raise Conflict(f"operator {username!r} exists")


async def set_password(pool: asyncpg.Pool, username: str, password: str, now: datetime) -> None:
    """A new password; the operator's refresh tokens stop working (they must sign in again)."""
    async with pool.acquire() as conn, conn.transaction():
        done = await conn.fetchval(
            """UPDATE gateway.operators SET password_hash = $2
                WHERE username = $1 RETURNING true""",
            username,
            _hasher.hash(password),
        )
        if not done:
            raise NotFound(f"no operator {username!r}")
        await _revoke_tokens(conn, username, now)


async def set_disabled(pool: asyncpg.Pool, username: str, disabled: bool, now: datetime) -> None:
    """Disable an operator (no sign-in, no refresh; their tokens are revoked) or enable again."""
    async with pool.acquire() as conn, conn.transaction():
        done = await conn.fetchval(
            "UPDATE gateway.operators SET disabled = $2 WHERE username = $1 RETURNING true",
            username,
            disabled,
        )
        if not done:
            raise NotFound(f"no operator {username!r}")
        if disabled:
            await _revoke_tokens(conn, username, now)


async def _revoke_tokens(conn: Conn, username: str, now: datetime) -> None:
    await conn.execute(
        """UPDATE gateway.refresh_tokens SET revoked_at = $2
            WHERE username = $1 AND revoked_at IS NULL""",
        username,
        now,
    )


async def list_operators(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT username, roles, region_prefix, disabled, created_at
             FROM gateway.operators ORDER BY username"""
    )
    return [dict(r.items()) for r in rows]


_KEY_QUERY = """
    UPDATE gateway.api_keys k SET last_used_at = $2
      FROM gateway.api_clients c
     WHERE {where} AND c.id = k.client_id
       AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)
       AND c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > $2)
 RETURNING k.key_hash, c.id, c.roles, c.scopes, c.sources, c.region_prefix, c.require_signature"""


@dataclass(frozen=True)
class _Key:
    identity: Identity
    digest: bytes
    require_signature: bool


class Authenticator:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        jwt_secret: str,
        token_ttl_s: int,
        key_cache_ttl_s: float,
        refresh_ttl_s: int = 7 * 86400,
        signature_skew_s: float = 300.0,
    ) -> None:
        self._pool = pool
        self._jwt_secret = jwt_secret
        self._ttl = token_ttl_s
        self._refresh_ttl = refresh_ttl_s
        self._skew = signature_skew_s
        self._cache_ttl = key_cache_ttl_s
        self._keys: dict[bytes | str, tuple[float, _Key | None]] = {}

    async def _key(self, where: str, arg: bytes | str, now: datetime) -> _Key | None:
        """A live key by digest or id, cached for a few seconds (last use is recorded on a
        cache miss, so at that granularity)."""
        hit = self._keys.get(arg)
        mono = time.monotonic()
        if hit is not None and hit[0] > mono:
            return hit[1]
        row = await self._pool.fetchrow(_KEY_QUERY.format(where=where), arg, now)
        found = None
        if row is not None:
            found = _Key(
                Identity(
                    subject=f"client:{row['id']}",
                    kind="api_client",
                    roles=list(row["roles"]),
                    scopes=list(row["scopes"]),
                    sources=list(row["sources"]),
                    region_prefix=row["region_prefix"],
                ),
                bytes(row["key_hash"]),
                row["require_signature"],
            )
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[arg] = (mono + self._cache_ttl, found)
        return found

    def forget_cached(self) -> None:
        """Drop cached keys (after a rotation or revocation on this replica; other replicas
        follow within the cache's TTL)."""
        self._keys.clear()

    async def from_api_key(self, key: str, now: datetime) -> Identity:
        found = await self._key("k.key_hash = $1", key_digest(key), now)
        if found is None:
            raise Unauthenticated("unknown, revoked or expired API key")
        if found.require_signature:
            raise Unauthenticated(f"this client must sign its requests ({signing.SCHEME})")
        return found.identity

    async def from_signature(
        self, authorization: str, *, method: str, path: str, query: str, body: bytes, now: datetime
    ) -> Identity:
        signed = signing.parse(authorization)
        found = await self._key("k.id = $1", signed.key_id, now)
        if found is None:
            raise Unauthenticated("unknown, revoked or expired API key")
        signing.verify(
            signed,
            found.digest,
            method=method,
            path=path,
            query=query,
            body=body,
            now_s=now.timestamp(),
            skew_s=self._skew,
        )
        fresh = await self._pool.fetchval(
            """INSERT INTO gateway.nonces (key_id, nonce, seen_at) VALUES ($1, $2, $3)
               ON CONFLICT DO NOTHING RETURNING true""",
            signed.key_id,
            signed.nonce,
            now,
        )
        if not fresh:
            raise Unauthenticated("replayed request (this nonce was used already)")
        return found.identity

    async def purge_nonces(self, now: datetime) -> None:
        await self._pool.execute(
            """DELETE FROM gateway.nonces
                WHERE seen_at < $1::timestamptz - make_interval(secs => $2::float8)""",
            now,
            2 * self._skew,
        )

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
        async with self._pool.acquire() as conn:
            return await self._tokens(
                conn, username, list(row["roles"]), row["region_prefix"], now, None
            )

    async def refresh(self, token: str, now: datetime) -> dict[str, Any]:
        """Trade a refresh token for a new access token and a new refresh token. A token used a
        second time means it was copied: its whole family is revoked and the operator must sign
        in again."""
        digest = key_digest(token)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """SELECT t.family, t.expires_at, t.used_at, t.revoked_at, o.username, o.roles,
                          o.region_prefix, o.disabled
                     FROM gateway.refresh_tokens t JOIN gateway.operators o USING (username)
                    WHERE t.digest = $1 FOR UPDATE OF t""",
                digest,
            )
            if row is None:
                raise Unauthenticated("unknown refresh token")
            if row["used_at"] is not None and row["revoked_at"] is None:
                await conn.execute(
                    """UPDATE gateway.refresh_tokens SET revoked_at = $2
                        WHERE family = $1 AND revoked_at IS NULL""",
                    row["family"],
                    now,
                )
                reused = True
            else:
                reused = False
        if reused:
            raise Unauthenticated("refresh token reused: every session of it is revoked")
        if row["revoked_at"] is not None or row["expires_at"] <= now or row["disabled"]:
            raise Unauthenticated("refresh token expired or revoked")
        async with self._pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetchval(
                """UPDATE gateway.refresh_tokens SET used_at = $2
                    WHERE digest = $1 AND used_at IS NULL AND revoked_at IS NULL
                RETURNING true""",
                digest,
                now,
            )
            if not claimed:  # a concurrent use of the same token won the race
                raise Unauthenticated("refresh token already used")
            return await self._tokens(
                conn, row["username"], list(row["roles"]), row["region_prefix"], now, row["family"]
            )

    async def revoke(self, token: str, now: datetime) -> None:
        """Sign out: revoke the refresh token's family (RFC 7009: unknown tokens are no error)."""
        await self._pool.execute(
            """UPDATE gateway.refresh_tokens SET revoked_at = $2
                WHERE family = (SELECT family FROM gateway.refresh_tokens WHERE digest = $1)
                  AND revoked_at IS NULL""",
            key_digest(token),
            now,
        )

    async def _tokens(
        self,
        conn: Conn,
        username: str,
        roles: list[str],
        region: str,
        now: datetime,
        family: str | None,
    ) -> dict[str, Any]:
        claims = {
            "sub": username,
            "roles": roles,
            "region": region,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self._ttl)).timestamp()),
            "typ": "access",
            "jti": secrets.token_urlsafe(12),
        }
        token = jwt.encode(claims, self._jwt_secret, algorithm="HS256")
        refresh = "qsr_" + secrets.token_urlsafe(32)
        await conn.execute(
            """INSERT INTO gateway.refresh_tokens (digest, username, family, issued_at, expires_at)
               VALUES ($1, $2, $3, $4, $5)""",
            key_digest(refresh),
            username,
            family or secrets.token_urlsafe(12),
            now,
            now + timedelta(seconds=self._refresh_ttl),
        )
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self._ttl,
            "refresh_token": refresh,
            "refresh_expires_in": self._refresh_ttl,
        }

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
