"""``GET /api/v1/events``: the console's live updates, as server-sent events. Authenticated and
rate-limited like any read, filtered to the caller's region; each event names warnings that
changed, and the console fetches them through the API as it would after a reload."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from services.gateway.adapters.live import LiveHub
from services.gateway.api.guard import Guard
from services.gateway.domain.live import heartbeat
from services.gateway.settings import GatewaySettings

EVENTS_OPENAPI = {
    "security": [{"operator": ["warnings:read"]}],
    "responses": {
        "200": {
            "description": "a stream of `change` events (`{kind, warnings, more}`) and keep-alive "
            "comments; kinds: warning, request, publication, confirmation, delivery, and resync "
            "(refetch everything: changes may have been missed)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
}


def router(guard: Guard, settings: GatewaySettings) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["live"])

    @r.get("/events", openapi_extra=EVENTS_OPENAPI, response_class=StreamingResponse)
    async def events(request: Request) -> StreamingResponse:
        """Changes to warnings in the caller's region, as they are committed. The stream ends
        when the caller's access token would have expired; reconnect with a fresh one."""
        identity, _ = await guard.authenticate(request, signed_body=False)
        identity.require_scope("warnings:read")
        await guard.limit(request, identity.subject, "alerting:read")
        hub: LiveHub = request.app.state.live
        ends = time.monotonic() + settings.access_token_ttl_s
        beat = settings.live_heartbeat_s

        async def stream() -> AsyncIterator[bytes]:
            async with hub.subscribe(identity.region_prefix) as sub:
                # hello: from here on every change is heard (a gateway just started may still
                # be connecting its listener; a stream waits a little for it)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hub.listening.wait(), 5.0)
                hello = b'{"listening": %s}' % (b"true" if hub.listening.is_set() else b"false")
                yield b"retry: 3000\nevent: hello\ndata: " + hello + b"\n\n"
                n = 0
                while (left := ends - time.monotonic()) > 0:
                    try:
                        change = await asyncio.wait_for(sub.queue.get(), min(beat, left))
                    except TimeoutError:
                        yield heartbeat()
                        continue
                    n += 1
                    yield change.as_sse(n)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return r
