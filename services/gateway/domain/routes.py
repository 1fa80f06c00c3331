"""Which service a public path goes to, and which paths carry their own credential."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    public_prefix: str  # e.g. "/api/v1/ingest/"
    upstream: str  # base URL of the service
    upstream_prefix: str  # e.g. "/v1/"
    name: str


# paths that carry their own credential and are reached without an identity: a 叫应 link (a
# signed token) and the SMS providers' callbacks (a callback token in the path)
PUBLIC_PREFIXES = (
    "/api/v1/alerts/confirm/",
    "/api/v1/alerts/callbacks/",
    "/api/v1/alerts/public/",  # the public CAP feed: public warnings only
)


def is_public(path: str) -> bool:
    return path.startswith(PUBLIC_PREFIXES)


def match(routes: list[Route], path: str) -> tuple[Route, str] | None:
    for r in routes:
        if path.startswith(r.public_prefix):
            return r, r.upstream_prefix + path[len(r.public_prefix) :]
    return None
