"""Routing from the public ``/api/v1/<service>/…`` paths to the services, with pooled clients."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from fastapi import Request
from fastapi.responses import Response

from shared.http import REQUEST_ID, problem
from shared.identity import HEADER
from shared.logging import request_id_var

# request headers passed on to the services; everything else (cookies, hop-by-hop headers, any
# identity header a client wrote) is dropped
FORWARD_REQUEST = (
    "content-type",
    "content-encoding",
    "accept",
    "accept-encoding",
    "content-length",
)
DROP_RESPONSE = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "server",
    "date",
}


@dataclass(frozen=True)
class Route:
    public_prefix: str  # e.g. "/api/v1/ingest/"
    upstream: str  # base URL of the service
    upstream_prefix: str  # e.g. "/v1/"
    name: str


# paths that carry their own credential and are reached without an identity: a 叫应 link (a
# signed token) and the SMS providers' callbacks (a callback token in the path)
PUBLIC_PREFIXES = ("/api/v1/alerts/confirm/", "/api/v1/alerts/callbacks/")


def is_public(path: str) -> bool:
    return path.startswith(PUBLIC_PREFIXES)


def match(routes: list[Route], path: str) -> tuple[Route, str] | None:
    for r in routes:
        if path.startswith(r.public_prefix):
            return r, r.upstream_prefix + path[len(r.public_prefix) :]
    return None


async def forward(
    client: httpx.AsyncClient,
    route: Route,
    path: str,
    request: Request,
    identity_header: str | None,
) -> Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARD_REQUEST}
    if identity_header is not None:
        headers[HEADER] = identity_header
    rid = request_id_var.get()
    if rid:
        headers[REQUEST_ID] = rid
    method = request.method
    has_body = method in ("POST", "PUT", "PATCH")
    req = client.build_request(
        method,
        route.upstream + path,
        params=str(request.query_params),
        headers=headers,
        content=request.stream() if has_body else None,
    )
    try:
        upstream = await client.send(req)
    except httpx.TimeoutException:
        return problem(504, f"the {route.name} service did not answer in time")
    except httpx.TransportError:
        return problem(502, f"the {route.name} service is unreachable")
    out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in DROP_RESPONSE}
    out_headers.pop(REQUEST_ID.lower(), None)
    return Response(content=upstream.content, status_code=upstream.status_code, headers=out_headers)
