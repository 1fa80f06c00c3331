"""The ingest consumer: raw observations in, stored and published readings out.

    decode ─▶ station lookup ─▶ check & normalise ─▶ store (idempotent) ─▶ publish readings.v1
       │            │                 │
       └────────────┴─────────────────┴──▶ dead letters (readings.dlq.v1, with the reason)

The runner commits offsets only after this returns, i.e. after the rows are stored and the
published readings are acknowledged by the broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter, is_, itemgetter
from typing import TypeVar

import asyncpg
from prometheus_client import Counter
from pydantic import ValidationError

from services.ingest.adapters.health import record_batch
from services.ingest.adapters.recent import RecentReadings, Undo
from services.ingest.adapters.stations import StationCache, auto_register
from services.ingest.adapters.store import ReadingStore
from services.ingest.domain.kernel import Kernel, default, published
from services.ingest.domain.rows import Row
from services.ingest.domain.validation import CheckPlan, PlanCache, StationInfo, rejection
from shared.clock import Clock
from shared.contracts import (
    RawReadingDecoder,
    RawReadingRecord,
    Topics,
    stable_id,
)
from shared.kafka import (
    BatchResult,
    EventProducer,
    InvalidMessage,
    Received,
    earlier,
    no_value,
)

log = logging.getLogger(__name__)

A = TypeVar("A")
B = TypeVar("B")

READINGS = Counter("qianshao_ingest_readings_total", "Readings stored", ["quality"])
REJECTED = Counter("qianshao_ingest_rejected_total", "Readings rejected", ["reason"])
CONFLICTS = Counter(
    "qianshao_ingest_conflicts_total", "Repeated readings with another value (first one kept)"
)


# Preparing a batch is CPU work of a few µs a message, while the previous batches' COPY and
# publishing wait on their sockets (a COPY of 20,000 rows is ~1.5 MB, written as the socket
# drains): preparing gives the event loop a turn every CHUNK messages (~1 ms), or those writes
# would stall behind it. Measured on bench/ingest: 2,048 → ~145 k rows/s, 512 → ~175 k,
# 128 → ~170 k (each call of the kernel has its cost).
CHUNK = 512

_STATION_ID = attrgetter("station_id")
_TOPIC = attrgetter("topic")
_VALUE = attrgetter("value")


@dataclass(slots=True)
class Prepared:
    now: datetime
    dead: list[InvalidMessage]
    rows: list[Row]
    events: list[tuple[str, bytes]]  # each row's readings.v1 event (key, bytes), made in advance
    forecasts: list[tuple[Row, datetime]]
    stations: dict[str, StationInfo]
    seen: dict[str, datetime]  # station → its newest observation in the batch
    sources: dict[tuple[str, str], int]  # (source, topic) → messages decoded
    undo: Undo


class IngestHandler:
    """A staged handler (:class:`shared.kafka.StagedHandler`): the runner prepares the next batch
    while this one is stored."""

    def __init__(
        self,
        *,
        store: ReadingStore,
        stations: StationCache,
        producer: EventProducer,
        topics: Topics,
        clock: Clock,
        future_tolerance_s: int = 300,
        recent: RecentReadings,
        pool: asyncpg.Pool,
        health: asyncpg.Pool | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        self._kernel = kernel if kernel is not None else default()
        self._pool = pool
        self._recent = recent
        self._health = health
        self._store = store
        self._stations = stations
        self._producer = producer
        self._topics = topics
        self._clock = clock
        self._future_tolerance_s = future_tolerance_s
        self._decoder = RawReadingDecoder()
        self._plans = PlanCache()
        self._storing = asyncio.Lock()  # FIFO: stores in the order their completions began

    async def process(self, batch: Sequence[Received]) -> BatchResult:
        prepared = await self.prepare(batch)
        try:
            return await self.complete(prepared)
        except BaseException:
            self.discard(prepared)  # a batch that comes again is judged as the first time
            raise

    async def prepare(self, batch: Sequence[Received]) -> Prepared:
        """Decode, look up stations, check and normalise, in message order, and make each row's
        readings.v1 event: all of it CPU work that overlaps the previous batch's writes. The
        batch's trusted values join the recent history now, so that the next batch can be judged
        on them while this one is stored; :meth:`discard` takes them out again.

        Planning, checking and the events are calls of the kernel, each over CHUNK readings."""
        now = self._clock.now()
        dead: list[InvalidMessage] = []
        msgs: list[Received] = []
        recs: list[RawReadingRecord] = []
        decode, decode_many = self._decoder.decode, self._decoder.decode_many
        for start in range(0, len(batch), CHUNK):
            await asyncio.sleep(0)  # let the previous batch's writes move on meanwhile
            chunk = batch[start : start + CHUNK]
            many = decode_many(list(map(_VALUE, chunk)))  # the usual chunk: all good
            if many is not None:
                msgs += chunk
                recs += many
                continue
            for m in chunk:  # one by one, to tell the bad from the good
                if m.value is None:  # a tombstone: nothing to decode
                    dead.append(no_value(m))
                    continue
                try:
                    recs.append(decode(m.value))
                except ValidationError as exc:
                    reason = "invalid_json" if _is_json_error(exc) else "invalid_reading"
                    dead.append(InvalidMessage(m, reason, _short(exc)))
                    continue
                msgs.append(m)
        ids = set(map(_STATION_ID, recs))
        stations = await self._stations.get_many(ids)
        if not ids.issubset(stations):  # sources allowed to register new stations do so here
            unknown = [
                (r.station_id, r.source, r.metric) for r in recs if r.station_id not in stations
            ]
            stations.update(await auto_register(self._pool, self._stations, unknown))
        kernel, topics = self._kernel, list(map(_TOPIC, msgs))
        plans: list[CheckPlan | None] = []
        judged: set[tuple[str, str]] = set()
        sources: Tally[tuple[str, str]] = Tally()
        for start in range(0, len(recs), CHUNK):  # in chunks, with turns for the event loop
            await asyncio.sleep(0)
            end = start + CHUNK
            planned = kernel.plan_batch(topics[start:end], recs[start:end], stations, self._plans)
            plans += planned.plans
            judged |= planned.judged
            sources.update(planned.sources)
        recent = await self._recent.working_copies(judged)
        latest = now + timedelta(seconds=self._future_tolerance_s)
        rows: list[Row] = []
        events: list[tuple[str, bytes]] = []
        forecasts: list[tuple[Row, datetime]] = []
        seen: dict[str, datetime] = {}
        for start in range(0, len(recs), CHUNK):
            await asyncio.sleep(0)
            end = start + CHUNK
            checked = kernel.check_batch(
                recs[start:end], plans[start:end], latest, recent, self._recent.run_cap, seen
            )
            for i, reason, value in checked.rejected:
                raw = recs[start + i]
                why = rejection(reason, plans[start + i], raw, raw.station_id, value)
                dead.append(InvalidMessage(msgs[start + i], why.reason, why.detail))
            for i, row in checked.forecasts:
                raw = recs[start + i]
                forecasts.append((row, raw.issued_at or raw.received_at or now))
            rows += checked.rows
            await asyncio.sleep(0)
            events += kernel.reading_events(checked.rows, stations, now)
        undo = self._recent.keep(recent)
        return Prepared(now, dead, rows, events, forecasts, stations, seen, sources, undo)

    def discard(self, prepared: Prepared) -> None:
        self._recent.restore(prepared.undo)

    async def complete(
        self, prepared: Prepared, after: asyncio.Future[BatchResult] | None = None
    ) -> BatchResult:
        """Store the prepared rows (after the batches begun before: one COPY at a time), then,
        once ``after`` has published its readings, publish them and record the sources'
        health."""
        now, stations, forecasts = prepared.now, prepared.stations, prepared.forecasts
        async with self._storing:
            result, _ = await _all(
                self._store.write(prepared.rows), self._store.write_forecasts(forecasts)
            )
        stored, rows = result.stored, prepared.rows
        if len(stored) == len(rows) and all(map(is_, stored, rows)):
            events = list(prepared.events)  # the usual case: every row stored, in order
        else:  # repeats, conflicts: the events of what was stored, in the order stored
            event_of = {id(r): e for r, e in zip(rows, prepared.events, strict=True)}
            events = [event_of[id(r)] for r in stored]
        for r, issued in forecasts:
            eid = stable_id("forecast", r.station_id, r.metric, issued.isoformat(), r.ts)
            events.append(
                (r.station_id, published(r, stations[r.station_id], eid, now, issued_at=issued))
            )
        await earlier(after)  # readings.v1 keeps the order of the batches
        await _all(
            self._record_health(prepared.seen, prepared.sources, now),
            self._producer.send_many(self._topics.readings, events),
        )
        for grade, n in Tally(map(itemgetter(5), stored)).items():  # 5: Row.quality
            READINGS.labels(grade).inc(n)
        CONFLICTS.inc(len(result.conflicts))
        for d in prepared.dead:
            REJECTED.labels(d.reason).inc()
        return BatchResult(dead_letters=prepared.dead)

    async def _record_health(
        self, seen: dict[str, datetime], sources: dict[tuple[str, str], int], now: datetime
    ) -> None:
        if self._health is None:
            return
        async with self._health.acquire() as conn:
            await record_batch(conn, seen=seen, messages=sources, now=now)


async def _all(a: Awaitable[A], b: Awaitable[B]) -> tuple[A, B]:
    """Both at once (they use separate connections); the first error is raised once both have
    finished, so nothing of a failed batch is still running when it is retried."""
    ra, rb = await asyncio.gather(a, b, return_exceptions=True)
    if isinstance(ra, BaseException):
        raise ra
    if isinstance(rb, BaseException):
        raise rb
    return ra, rb


def _is_json_error(exc: ValidationError) -> bool:
    return any(e.get("type") == "json_invalid" for e in exc.errors())


def _short(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts)
