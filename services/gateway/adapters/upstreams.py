"""Routing from the public ``/api/v1/<service>/…`` paths to the services: pooled clients, a
timeout on every call, retries for idempotent methods only, a circuit breaker per service,
request bodies streamed (and capped) and the request id passed on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import yarl
from fastapi import Request
from fastapi.responses import Response

from services.gateway.domain.breaker import Breaker
from services.gateway.domain.routes import Route
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


@dataclass
class Upstreams:
    """What forwarding needs besides the request: the connection pool (aiohttp: the proxy hop
    is the gateway's main cost, and aiohttp's client costs a fraction of httpx's here, see
    bench/gateway.py), the timeout and the per-service breakers."""

    session: aiohttp.ClientSession
    timeout: aiohttp.ClientTimeout
    retries: int = 2
    max_body_bytes: int = 16 << 20
    body_timeout_s: float = 30.0
    threshold: int = 5
    open_s: float = 10.0
    # the gateway as clients reach it, when configured (links the services write start with it)
    public_base: yarl.URL | None = None
    breakers: dict[str, Breaker] = field(default_factory=dict)

    def breaker(self, name: str) -> Breaker:
        if name not in self.breakers:
            self.breakers[name] = Breaker(self.threshold, self.open_s)
        return self.breakers[name]


IDEMPOTENT = ("GET", "HEAD")
BREAKER_STATUSES = (502, 503, 504)


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


async def body_chunks(
    request: Request, limit: int, timeout_s: float, failed: list[Exception] | None = None
) -> AsyncIterator[bytes]:
    """The request body as it arrives, at most ``limit`` bytes, all of it within ``timeout_s``
    (a client trickling its body slowly holds a connection, not the gateway). The error is also
    put in ``failed``: a client library sending the stream may wrap it in its own."""
    try:
        async for chunk in _chunks(request, limit, timeout_s):
            yield chunk
    except (BodyTooLarge, BodyTimeout) as exc:
        if failed is not None:
            failed.append(exc)
        raise


async def _chunks(request: Request, limit: int, timeout_s: float) -> AsyncIterator[bytes]:
    seen = 0
    stream = request.stream().__aiter__()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                chunk = await anext(stream)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise BodyTimeout from exc
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge
        yield chunk


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    return b"".join([c async for c in body_chunks(request, limit, timeout_s)])


def too_large(request: Request, limit: int) -> bool:
    length = request.headers.get("content-length")
    return length is not None and (not length.isdigit() or int(length) > limit)


def _valid_target(target: str) -> bool:
    return all(0x20 < ord(ch) < 0x7F for ch in target)


async def forward(
    up: Upstreams,
    route: Route,
    path: str,
    request: Request,
    identity_header: str | None,
    body: bytes | None = None,
) -> Response:
    """Forward the request; ``body`` when the gateway already read it (signed requests),
    otherwise the body is streamed through. ``path`` is as the client encoded it."""
    breaker = up.breaker(route.name)
    if not breaker.allow(time.monotonic()):
        after = breaker.retry_after(time.monotonic())
        return problem(
            503,
            f"the {route.name} service is failing; calls are paused for a few seconds",
            headers={"Retry-After": str(after)},
        )
    if too_large(request, up.max_body_bytes):
        return problem(413, f"the body is larger than {up.max_body_bytes} bytes")
    query = request.scope.get("query_string", b"").decode("latin-1")
    target = path + ("?" + query if query else "")
    if not _valid_target(target):
        return problem(400, "the path or query is not a valid URL")
    url = yarl.URL(route.upstream + target, encoded=True)
    headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARD_REQUEST}
    # where the client reached us, so the links a service writes (a feed, a CAP document's
    # address) work for that client: the configured public address, else the request's own
    base = up.public_base
    if base is not None:
        headers["X-Forwarded-Proto"] = base.scheme
        headers["X-Forwarded-Host"] = base.authority
        headers["X-Forwarded-Prefix"] = base.path.rstrip("/") + route.public_prefix
    else:
        headers["X-Forwarded-Proto"] = request.url.scheme
        headers["X-Forwarded-Host"] = request.headers.get("host", request.url.netloc)
        headers["X-Forwarded-Prefix"] = route.public_prefix
    if identity_header is not None:
        headers[HEADER] = identity_header
    rid = request_id_var.get()
    if rid:
        headers[REQUEST_ID] = rid
    method = request.method
    content: bytes | AsyncIterator[bytes] | None = body
    failed: list[Exception] = []
    if method in ("GET", "HEAD"):  # a body on these means nothing: it is not passed on
        content = None
        for name in ("content-length", "content-type", "content-encoding"):
            headers.pop(name, None)
    elif body is None:
        content = body_chunks(request, up.max_body_bytes, up.body_timeout_s, failed)
    attempts = 1 + (up.retries if method in IDEMPOTENT else 0)
    for attempt in range(attempts):
        try:
            async with up.session.request(
                method,
                url,
                headers=headers,
                data=content,
                allow_redirects=False,
                timeout=up.timeout,
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                raw = [
                    (k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in upstream.headers.items()
                    if k.lower() not in DROP_RESPONSE and k.lower() != REQUEST_ID.lower()
                ]
            break
        except BodyTooLarge:
            return problem(413, f"the body is larger than {up.max_body_bytes} bytes")
        except BodyTimeout:
            return problem(408, f"the body did not arrive within {up.body_timeout_s:g} s")
        except (aiohttp.ClientError, TimeoutError) as exc:
            if failed:  # the client's body, not the service, was at fault
                break
            if attempt + 1 < attempts:
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            breaker.record(False, time.monotonic())
            if isinstance(exc, TimeoutError):
                return problem(504, f"the {route.name} service did not answer in time")
            return problem(502, f"the {route.name} service is unreachable")
    if failed:
        if isinstance(failed[0], BodyTooLarge):
            return problem(413, f"the body is larger than {up.max_body_bytes} bytes")
        return problem(408, f"the body did not arrive within {up.body_timeout_s:g} s")
    breaker.record(status not in BREAKER_STATUSES, time.monotonic())
    response = Response(content=payload, status_code=status)
    response.raw_headers.extend(raw)
    return response
