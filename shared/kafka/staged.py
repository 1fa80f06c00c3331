"""The runner's loop for a staged handler: a pipeline of batches.

The newest batch is prepared while the one before it is written and the one before that
published (each handler orders its own steps; see :class:`StagedHandler`). Offsets are still
committed batch by batch, in order, each after its batch is durable.

When a batch cannot complete for a reason that a retry will not cure, it and the batches
prepared after it are discarded (newest first) and go through the sequential path, which
isolates the faulty message."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from shared.kafka.messages import BatchResult, InvalidMessage, Received, StagedHandler
from shared.kafka.metrics import BATCH_SECONDS, RETRIES

log = logging.getLogger(__name__)

# Batches a staged runner holds at once: while the newest is prepared, the one before it is
# written and the one before that published. Measured on bench/ingest (200,000 readings, two
# cores): ~150 k rows/s with two (a batch's writes waited for the last one's publishing), ~175 k
# with three.
IN_HAND = 3


class Steps(Protocol):
    """The runner's steps the staged loop is built on (``runner.ConsumerRunner``)."""

    @property
    def config(self) -> Any: ...

    @property
    def stopping(self) -> bool: ...

    async def poll(self, timeout_ms: int) -> list[Received]: ...

    def transient(self, exc: BaseException) -> bool: ...

    async def process_until_done(self, batch: Sequence[Received]) -> bool: ...

    async def finish(self, batch: Sequence[Received]) -> None: ...

    async def settle(
        self, batch: Sequence[Received], result: BatchResult, started: float
    ) -> None: ...

    async def backoff(self, delay: float) -> float: ...


@dataclass(slots=True)
class _Staged:
    """A prepared batch whose completion is running."""

    batch: list[Received]
    prepared: Any
    task: asyncio.Task[BatchResult]
    started: float


class StagedLoop:
    def __init__(self, runner: Steps, handler: StagedHandler) -> None:
        self._runner = runner
        self._handler = handler

    async def run(self) -> None:
        r, cfg, handler = self._runner, self._runner.config, self._handler
        pending: list[_Staged] = []  # oldest first, at most IN_HAND
        try:
            while not r.stopping:
                batch = await r.poll(0 if pending else cfg.poll_timeout_ms)
                if not batch and not pending:
                    continue
                started = time.perf_counter()
                prepared: Any = None
                if batch:
                    try:
                        prepared = await handler.prepare(batch)
                    except Exception:
                        log.exception("preparing a batch failed; handling it message by message")
                        prepared = None
                if prepared is not None:
                    # its writes start now, beside the previous batch's publishing and before
                    # that one's commit, so neither round trip is on the critical path
                    pending.append(
                        _Staged(batch, prepared, self._start(prepared, pending), started)
                    )
                    if len(pending) < IN_HAND:
                        continue
                    if not await self._settle_oldest(pending):
                        return
                    continue
                while pending:  # nothing new to prepare: finish what is in hand, in order
                    if not await self._settle_oldest(pending):
                        return
                if batch:  # its preparation failed
                    with BATCH_SECONDS.labels(cfg.name).time():
                        if not await r.process_until_done(batch):
                            return
                        await r.finish(batch)
        finally:
            while pending:
                outcome = await self._await_oldest(pending)
                if not isinstance(outcome, BatchResult):
                    await self._abandon(pending)  # left uncommitted: they come again
                    break
                await self._settle_first(pending, outcome)

    def _start(self, prepared: Any, before: list[_Staged]) -> asyncio.Task[BatchResult]:
        """Start a completion after the last of ``before``."""
        after = before[-1].task if before else None
        return asyncio.create_task(self._handler.complete(prepared, after))

    async def _settle_oldest(self, pending: list[_Staged]) -> bool:
        """Wait for the oldest batch in hand and commit it. When it fails for good, every batch
        in hand is undone (newest first: each was judged on the ones before) and handled again
        on the sequential path. False: stopping with batches left uncommitted."""
        outcome = await self._await_oldest(pending)
        if isinstance(outcome, BatchResult):
            await self._settle_first(pending, outcome)
            return True
        batches = [s.batch for s in pending]
        await self._abandon(pending)
        if outcome is None:
            return False
        r = self._runner
        for batch in batches:
            with BATCH_SECONDS.labels(r.config.name).time():
                if not await r.process_until_done(batch):
                    return False
                await r.finish(batch)
        return True

    async def _settle_first(self, pending: list[_Staged], outcome: BatchResult) -> None:
        """Commit the oldest batch in hand, completed with ``outcome``. If that fails, nor may
        the batches after it be committed (their commits would cover its offsets): they are
        undone, and all come again."""
        done = pending.pop(0)
        try:
            await self._runner.settle(done.batch, outcome, done.started)
        except BaseException:
            await self._abandon(pending)
            raise

    async def _abandon(self, pending: list[_Staged]) -> None:
        """Let the completions in hand end (a later one fails once its predecessor has), then
        undo their batches, newest first."""
        await asyncio.gather(*(s.task for s in pending), return_exceptions=True)
        for s in reversed(pending):
            self._handler.discard(s.prepared)
        pending.clear()

    async def _await_oldest(self, pending: list[_Staged]) -> BatchResult | Literal[False] | None:
        """Wait for the oldest batch in hand, retrying its completion (and so the later ones',
        which wait on it) while the failure is one a retry can cure: its result, to settle.
        False: it failed for good and must be discarded and handled again on the sequential
        path; None: stopping with it unfinished (uncommitted). Neither discards."""
        r = self._runner
        delay = r.config.retry_initial_s
        while True:
            try:
                return await pending[0].task
            except Exception as exc:
                if isinstance(exc, InvalidMessage) or not r.transient(exc):
                    log.warning(
                        "a prepared batch failed; handling it again message by message",
                        extra={"consumer": r.config.name, "error": repr(exc)},
                    )
                    return False
                RETRIES.labels(r.config.name).inc()
                log.warning(
                    "batch failed on a dependency; retrying",
                    extra={"consumer": r.config.name, "error": repr(exc), "delay_s": delay},
                )
                # the later completions fail with it (they wait on it): let them end first
                await asyncio.gather(*(s.task for s in pending[1:]), return_exceptions=True)
                if r.stopping:
                    return None
                delay = await r.backoff(delay)
                for i, s in enumerate(pending):
                    s.task = self._start(s.prepared, pending[:i])
