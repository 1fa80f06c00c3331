"""Who may do what, and what a credential is: the role → scope table every service's checks rely
on, and API keys (shown once, stored as SHA-256 digests)."""

from __future__ import annotations

import hashlib
import secrets

READ_SCOPES = [
    "stations:read",
    "readings:read",
    "risk:read",
    "warnings:read",
    "subscriptions:read",
    "recipients:read",
    "silences:read",
    "atlas:read",
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
        "atlas:write",
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
        "atlas:write",
    ],
    "viewer": list(READ_SCOPES),
    "upstream_platform": ["readings:write", "stations:read", "upstream_warnings:write"],
}


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


def new_key_id() -> str:
    return "k_" + secrets.token_urlsafe(12)
