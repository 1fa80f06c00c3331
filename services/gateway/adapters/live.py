"""The change notifications alerting commits (PostgreSQL NOTIFY on ``qianshao_live``), fanned out
to the operators' open event streams. One connection listens for the whole gateway; a lost one is
replaced, and every stream is then told to refetch (what happened meanwhile was not heard)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from services.gateway.domain.live import RESYNC, Change, parse

CHANNEL = "qianshao_live"
log = logging.getLogger(__name__)


class Subscriber:
    """One open stream: the changes its operator may see, in a bounded queue. A stream that
    cannot keep up is not waited for: its queue is emptied and it is told to refetch."""

    def __init__(self, region_prefix: str, size: int) -> None:
        self.region_prefix = region_prefix
        self.queue: asyncio.Queue[Change] = asyncio.Queue(size)

    def offer(self, change: Change) -> None:
        seen = change.seen_by(self.region_prefix)
        if seen is None:
            return
        try:
            self.queue.put_nowait(seen)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)


class LiveHub:
    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        *,
        queue_size: int = 256,
        retry_s: float = 1.0,
    ) -> None:
        self._connect = connect
        self._queue_size = queue_size
        self._retry_s = retry_s
        self._subscribers: set[Subscriber] = set()
        self._stopping = asyncio.Event()
        self.listening = asyncio.Event()

    @asynccontextmanager
    async def subscribe(self, region_prefix: str) -> AsyncIterator[Subscriber]:
        sub = Subscriber(region_prefix, self._queue_size)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def publish(self, change: Change) -> None:
        for sub in list(self._subscribers):
            sub.offer(change)

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        change = parse(str(payload))
        if change is None:
            log.warning("ignored a notification on %s: %.200s", channel, payload)
            return
        self.publish(change)

    async def run(self) -> None:
        """Listen until stopped, reconnecting after a lost connection."""
        while not self._stopping.is_set():
            try:
                conn = await self._connect()
                try:
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                    await conn.add_listener(CHANNEL, self._on_notify)
                    self.listening.set()
                    self.publish(RESYNC)
                    await _first(lost.wait(), self._stopping.wait())
                finally:
                    self.listening.clear()
                    await conn.close(timeout=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("live updates: listening failed (%s); trying again", exc)
            if not self._stopping.is_set():
                await asyncio.sleep(self._retry_s)

    def stop(self) -> None:
        self._stopping.set()


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
