"""A background job that runs a tick every so often until it is stopped; a failing tick is logged
and tried again at the next one, never fatal to the service (sweeps, refreshes, housekeeping)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, every_s: float, tick: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self._every = every_s
        self._tick = tick
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._tick()
            except Exception:
                log.warning("%s failed; trying again at the next tick", self.name, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._every)
