"""Test helpers: run an ASGI app on a real port, sign identities, wait for conditions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import uvicorn

from shared.devstack.procs import free_port
from shared.identity import Identity, sign
from shared.settings import DEV_INTERNAL_SECRET

T = TypeVar("T")


@contextlib.asynccontextmanager
async def serve(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (lifespan included); yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 60
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during start-up")
        if time.monotonic() > deadline:
            raise TimeoutError("server did not start")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def identity_header(
    *,
    scopes: list[str] | None = None,
    roles: list[str] | None = None,
    region_prefix: str = "",
    subject: str = "test",
    kind: str = "operator",
    secret: str = DEV_INTERNAL_SECRET,
) -> dict[str, str]:
    ident = Identity(
        subject=subject,
        kind=kind,  # type: ignore[arg-type]
        roles=roles or ["admin"],  # type: ignore[arg-type]
        scopes=scopes or [],
        region_prefix=region_prefix,
    )
    return {"X-Qianshao-Identity": sign(ident, secret, datetime.now(UTC))}


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns a truthy value; return it. Fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"{what} not reached within {timeout_s}s (last: {last!r})")
