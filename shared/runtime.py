"""What every service's lifespan does: open the pool, migrate its schema, start a producer (the
services on the broker), run background tasks (consumers, timers), and stop all of it cleanly in
reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from shared.clock import Clock
from shared.db import TRANSIENT, StorageMode, create_pool, migrate, ping
from shared.kafka import (
    BatchHandler,
    ConsumerRunner,
    EventProducer,
    RunnerConfig,
    ensure_topics,
    make_consumer,
)
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    pool: asyncpg.Pool
    broker: EventProducer | None  # None: a service that does not use the broker (the gateway)
    storage: StorageMode
    runners: list[ConsumerRunner] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _stoppers: list[Callable[[], None]] = field(default_factory=list)
    _runner_tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def producer(self) -> EventProducer:
        if self.broker is None:
            raise RuntimeError("this runtime was started without the broker")
        return self.broker

    def run_consumer(self, runner: ConsumerRunner, name: str) -> None:
        self.runners.append(runner)
        task = asyncio.create_task(_supervise(runner.run, name), name=name)
        self._runner_tasks.append(task)
        self.tasks.append(task)

    def consume(
        self,
        *,
        service: str,
        settings: ServiceSettings,
        group_id: str,
        topics: list[str],
        handler: BatchHandler,
        clock: Clock,
        dlq_topic: Callable[[str], str] | None = None,
    ) -> ConsumerRunner:
        """Start a consumer runner for ``topics`` in group ``group_id``; return it."""
        config = RunnerConfig(name=service, topics=topics, transient=TRANSIENT)
        if dlq_topic is not None:
            config.dlq_topic = dlq_topic
        runner = ConsumerRunner(
            lambda: make_consumer(settings.kafka(), topics, group_id=group_id),
            handler,
            self.producer,
            config,
            clock,
            service=service,
        )
        self.run_consumer(runner, f"{service}-consumer")
        return runner

    def run_task(
        self, factory: Callable[[], Coroutine[Any, Any, None]], name: str, stop: Callable[[], None]
    ) -> None:
        self._stoppers.append(stop)
        self.tasks.append(asyncio.create_task(_supervise(factory, name), name=name))

    async def checks(self) -> dict[str, Callable[[], Awaitable[None]]]:
        checks: dict[str, Callable[[], Awaitable[None]]] = {"database": lambda: ping(self.pool)}
        if self.broker is not None:
            checks["broker"] = self.broker.ping
        return checks

    async def close(self, timeout_s: float = 20.0) -> None:
        """Stop consumers first (they finish their batch and commit), then the other loops (an
        outbox relay drains what the last batch wrote), then the producer and the pool."""
        runner_tasks = list(self._runner_tasks)
        for r in self.runners:
            r.stop()
        await _wait(runner_tasks, timeout_s)
        for stop in self._stoppers:
            stop()
        await _wait([t for t in self.tasks if t not in runner_tasks], timeout_s)
        if self.broker is not None:
            await self.broker.stop()
        await self.pool.close()


async def _wait(tasks: list[asyncio.Task[Any]], timeout_s: float) -> None:
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for t in pending:
        t.cancel()
    for t in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t


async def _supervise(factory: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
    """Run a background loop; if it crashes, log and restart it after a pause. A loop that returns
    (it was asked to stop) ends the supervision."""
    delay = 0.5
    while True:
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task crashed; restarting", extra={"task": name})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def tune_gc(threshold: int) -> None:
    """Collect once, freeze what start-up made (imports, apps, pools: never garbage), and space
    the young collections ``threshold`` allocations apart; the older generations keep their
    ratios. ``0`` leaves the interpreter's defaults. Reference counting still frees everything
    acyclic at once; only cycles wait longer."""
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)


async def start_runtime(
    settings: ServiceSettings,
    *,
    schema: str,
    migrations: Path,
    storage: str = "auto",
    topics: list[str] | None = None,
    partitions: int = 3,
    broker: bool = True,
) -> Runtime:
    pool = await create_pool(
        settings.dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max
    )
    try:
        mode = await migrate(pool, schema, migrations, storage=storage)
        producer = None
        if broker:
            if topics:
                await ensure_topics(settings.kafka(), topics, partitions=partitions)
            producer = await EventProducer.start(
                settings.kafka(),
                client_id=f"{settings.kafka_client_id}-{schema}",
                idempotence=settings.kafka_idempotence,
            )
    except BaseException:
        await pool.close()
        raise
    tune_gc(settings.gc_threshold)
    return Runtime(pool=pool, broker=producer, storage=mode)
