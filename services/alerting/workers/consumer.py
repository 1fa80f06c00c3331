"""The alerting consumer: risk events, upstream warnings and station health in; warnings, their
versions, feed incidents and delivery-ledger rows out.

It decodes a batch, runs the pipeline (:mod:`services.alerting.pipeline.builder`) over its risk
events in slices growing from 8 to ``slice_size``, a transaction each (delivery is woken after
each), and names
the messages it cannot read, for the dead-letter topic. Everything is
keyed by the event id (``processed_events``), so a batch re-delivered before its commit does
nothing the second time. Delivery happens afterwards, from the ledger
(:mod:`services.alerting.workers.delivery`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

import asyncpg
from pydantic import ValidationError

from services.alerting.domain.feeds import Signal
from services.alerting.pipeline.builder import Pipeline
from services.alerting.pipeline.feeds import FeedWatch
from services.alerting.pipeline.relay import relay, relay_to_residents
from shared.clock import Clock
from shared.contracts import RiskEvent, StationHealth, Topics, UpstreamWarning
from shared.errors import DatabaseError
from shared.kafka import BatchResult, InvalidMessage, Received, no_value

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
T = TypeVar("T")


def slices(items: Sequence[T], size: int, first: int = 8) -> list[Sequence[T]]:
    """``items`` in order, in slices that start small and double up to ``size``: the first
    warnings of a burst are committed (and leave) within a few statements, the rest in slices
    large enough to keep commits few."""
    out: list[Sequence[T]] = []
    i, n = 0, max(1, min(first, size))
    while i < len(items):
        out.append(items[i : i + n])
        i += n
        n = min(size, n * 2)
    return out


def _health_signal(h: StationHealth) -> Signal:
    return Signal(
        event_id=h.event_id,
        station_id=h.station_id,
        source="health",
        offline=not h.online,
        region_code=h.region_code,
        enterprise=h.owner_enterprise,
        at=h.produced_at,
        last_seen=h.last_seen,
    )


def _nodata_signal(e: RiskEvent) -> Signal:
    assert e.station_id is not None
    return Signal(
        event_id=e.event_id,
        station_id=e.station_id,
        source="no_data",
        offline=e.level != "none",
        region_code=e.region_code,
        enterprise=None,  # learnt from the station's health events
        at=e.event_time,
    )


class AlertingHandler:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        pipeline: Pipeline,
        topics: Topics,
        clock: Clock,
        on_new_deliveries: Callable[[], None],
        feeds: FeedWatch | None = None,
        slice_size: int = 200,
    ) -> None:
        self._slice = slice_size
        self._pool = pool
        self._pipeline = pipeline
        self._feeds = feeds
        self._topics = topics
        self._clock = clock
        self._wake = on_new_deliveries

    @property
    def pipeline(self) -> Pipeline:
        return self._pipeline

    async def process(self, batch: Sequence[Received]) -> BatchResult:
        events, upstream, signals, dead = self._decode(batch)
        if upstream:
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    relayed = await relay(conn, upstream, self._clock.now())
                if relayed:
                    self._wake()
                # then the residents of an earthquake early warning, part by part, before the
                # batch's offsets are committed
                await relay_to_residents(
                    self._pool, [u.identifier for u in upstream], self._clock.now(), self._wake
                )
            except _DB_ERRORS as exc:
                raise DatabaseError(f"alerting relay failed: {exc!r}") from exc
        station = [e for e in events if e.scope == "station" and e.station_id and e.kind == "level"]
        try:
            # in slices, each committed on its own, so the first warnings of a burst go out
            # while the later ones are still being decided; a slice applied before a crash is
            # skipped by its events' ids when the batch comes again
            for part in slices(station, self._slice):
                async with self._pool.acquire() as conn, conn.transaction():
                    n = await self._pipeline.apply(conn, part, self._clock.now())
                if n:
                    self._wake()
            signals += [_nodata_signal(e) for e in events if e.kind == "no_data" and e.station_id]
            if signals and self._feeds is not None:
                async with self._pool.acquire() as conn, conn.transaction():
                    notices = await self._feeds.apply(conn, signals, self._clock.now())
                if notices:
                    self._wake()
            await self._heard(max((e.produced_at for e in events), default=None))
        except _DB_ERRORS as exc:
            raise DatabaseError(f"alerting write failed: {exc!r}") from exc
        return BatchResult(dead_letters=dead)

    def _decode(
        self, batch: Sequence[Received]
    ) -> tuple[list[RiskEvent], list[UpstreamWarning], list[Signal], list[InvalidMessage]]:
        events: list[RiskEvent] = []
        upstream: list[UpstreamWarning] = []
        signals: list[Signal] = []
        dead: list[InvalidMessage] = []
        for m in batch:
            if m.value is None:
                dead.append(no_value(m))
                continue
            try:
                if m.topic == self._topics.warnings_upstream:
                    upstream.append(UpstreamWarning.model_validate_json(m.value))
                elif m.topic == self._topics.station_health:
                    signals.append(_health_signal(StationHealth.model_validate_json(m.value)))
                else:
                    events.append(RiskEvent.model_validate_json(m.value))
            except ValidationError as exc:
                reason = {
                    self._topics.warnings_upstream: "invalid_upstream_warning",
                    self._topics.station_health: "invalid_station_health",
                }.get(m.topic, "invalid_risk_event")
                dead.append(InvalidMessage(m, reason, str(exc)[:500]))
        return events, upstream, signals, dead

    async def _heard(self, heard: datetime | None) -> None:
        """When risk was last heard (the newest ``produced_at`` of the batch, whatever its kind
        or scope), in a transaction of its own, so that replicas do not queue on its one row:
        lost in a crash, it only lags, and a lagging time holds expiries back, never brings
        them forward."""
        if heard is None:
            return
        await self._pool.execute(
            """INSERT INTO alerting.risk_heard (heard_at) VALUES ($1)
               ON CONFLICT (one) DO UPDATE
               SET heard_at = greatest(risk_heard.heard_at, EXCLUDED.heard_at)
               WHERE risk_heard.heard_at < EXCLUDED.heard_at""",
            heard,
        )
