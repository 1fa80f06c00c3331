"""Signed requests from upstream platforms (optional per client, or required with
``require_signature``). The key itself never travels; a replayed request is refused.

    Authorization: QS1-HMAC-SHA256 KeyId=<key id>,Timestamp=<unix s>,Nonce=<16-64 chars>,
                   Signature=<hex>

The signature is HMAC-SHA256 over the string to sign below, keyed with SHA-256(api key): the
platform derives it from the key it was given, and the gateway holds only that digest.

    QS1-HMAC-SHA256
    <METHOD>
    <path>
    <query: the parameters sorted by name then value, each percent-encoded, joined by &>
    <timestamp>
    <nonce>
    <hex SHA-256 of the body>

A timestamp more than ``skew_s`` away from the gateway's clock is refused, and each nonce is
accepted once per key (kept for twice the skew, so a replay cannot outlive its record).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from shared.errors import Unauthenticated

SCHEME = "QS1-HMAC-SHA256"
_FIELD = re.compile(r"\s*(KeyId|Timestamp|Nonce|Signature)=([^,\s]+)\s*")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass(frozen=True)
class SignedRequest:
    key_id: str
    timestamp: int
    nonce: str
    signature: str


def parse(authorization: str) -> SignedRequest:
    scheme, _, rest = authorization.partition(" ")
    if scheme != SCHEME:
        raise Unauthenticated(f"unknown authorization scheme; use {SCHEME} or Bearer")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        m = _FIELD.fullmatch(part)
        if m is None or m[1] in fields:
            raise Unauthenticated("malformed signature header")
        fields[m[1]] = m[2]
    if set(fields) != {"KeyId", "Timestamp", "Nonce", "Signature"}:
        raise Unauthenticated("the signature header needs KeyId, Timestamp, Nonce and Signature")
    if not fields["Timestamp"].isdigit() or not _NONCE.match(fields["Nonce"]):
        raise Unauthenticated("malformed timestamp or nonce")
    return SignedRequest(
        fields["KeyId"], int(fields["Timestamp"]), fields["Nonce"], fields["Signature"].lower()
    )


def canonical_query(query: str) -> str:
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)


def string_to_sign(
    method: str, path: str, query: str, timestamp: int, nonce: str, body: bytes
) -> str:
    return "\n".join(
        [
            SCHEME,
            method.upper(),
            path,
            canonical_query(query),
            str(timestamp),
            nonce,
            hashlib.sha256(body).hexdigest(),
        ]
    )


def signature(signing_key: bytes, text: str) -> str:
    return hmac.new(signing_key, text.encode(), hashlib.sha256).hexdigest()


def sign_request(
    api_key: str,
    key_id: str,
    method: str,
    path: str,
    query: str,
    body: bytes,
    timestamp: int,
    nonce: str,
) -> str:
    """The Authorization header a platform sends (used by tests, benchmarks and as a reference
    for platform developers)."""
    key = hashlib.sha256(api_key.encode()).digest()
    sig = signature(key, string_to_sign(method, path, query, timestamp, nonce, body))
    return f"{SCHEME} KeyId={key_id},Timestamp={timestamp},Nonce={nonce},Signature={sig}"


def verify(
    signed: SignedRequest,
    signing_key: bytes,
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    now_s: float,
    skew_s: float,
) -> None:
    """Raise unless the signature is right and fresh (the nonce is checked by the caller)."""
    if abs(now_s - signed.timestamp) > skew_s:
        raise Unauthenticated("the signature's timestamp is too far from the gateway's clock")
    expected = signature(
        signing_key, string_to_sign(method, path, query, signed.timestamp, signed.nonce, body)
    )
    if not hmac.compare_digest(expected, signed.signature):
        raise Unauthenticated("bad signature")
