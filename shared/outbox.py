"""Transactional outbox: events are written to ``<schema>.outbox`` in the same transaction as the
state that caused them, then relayed to Kafka. Relaying is at-least-once (a crash after the send
and before the mark re-sends); consumers de-duplicate by ``event_id``.

Order: events leave in ``seq`` order, also with several replicas. One relay at a time holds a
transaction-scoped advisory lock for the schema; the others wait for it rather than skip ahead
(``SKIP LOCKED`` alone would let a replica publish newer events of a station before an older
batch that another replica is still sending)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import asyncpg
import orjson
from prometheus_client import Counter, Gauge

from shared.db import Conn, ident
from shared.errors import DependencyError
from shared.kafka import EventProducer

log = logging.getLogger(__name__)

RELAYED = Counter("qianshao_outbox_relayed_total", "Outbox events relayed to Kafka", ["schema"])
UNPUBLISHED = Gauge(
    "qianshao_outbox_unpublished_events", "Outbox events written but not yet on Kafka", ["schema"]
)
OLDEST_AGE = Gauge(
    "qianshao_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest outbox event not yet on Kafka: grows while the relay is stuck",
    ["schema"],
)


async def enqueue(conn: Conn, schema: str, events: Iterable[tuple[str, str, str, Any]]) -> None:
    """Add (event_id, topic, key, payload) rows inside the caller's transaction."""
    rows = [(eid, topic, key, payload) for eid, topic, key, payload in events]
    if rows:
        await conn.executemany(
            f"""INSERT INTO {ident(schema)}.outbox (event_id, topic, key, payload)
                VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING""",
            rows,
        )


class OutboxRelay:
    def __init__(
        self, pool: asyncpg.Pool, schema: str, producer: EventProducer, *, poll_s: float = 1.0
    ) -> None:
        self._pool = pool
        self._schema = ident(schema)
        self._producer = producer
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def relay_once(self, limit: int = 1000) -> int:
        """Publish up to ``limit`` unpublished events in order; return how many (0 when there
        are none). Waits while another replica's relay is publishing."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"outbox:{self._schema}"
            )
            rows = await conn.fetch(
                f"""SELECT seq, topic, key, payload FROM {self._schema}.outbox
                     WHERE published_at IS NULL ORDER BY seq LIMIT $1""",
                limit,
            )
            if not rows:
                return 0
            by_topic: dict[str, list[tuple[str, bytes]]] = {}
            for r in rows:
                by_topic.setdefault(r["topic"], []).append((r["key"], orjson.dumps(r["payload"])))
            for topic, items in by_topic.items():
                await self._producer.send_many(topic, items)
            await conn.execute(
                f"UPDATE {self._schema}.outbox SET published_at = now() WHERE seq = ANY($1)",
                [r["seq"] for r in rows],
            )
        RELAYED.labels(self._schema).inc(len(rows))
        return len(rows)

    async def measure(self) -> None:
        """Set the backlog gauges from the table (the partial index of unpublished rows), so
        they tell the truth also while sending fails."""
        row = await self._pool.fetchrow(
            f"""SELECT count(*) AS n,
                       coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age
                  FROM {self._schema}.outbox WHERE published_at IS NULL"""
        )
        assert row is not None
        UNPUBLISHED.labels(self._schema).set(row["n"])
        OLDEST_AGE.labels(self._schema).set(max(float(row["age"]), 0.0))

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                while await self.relay_once() > 0:
                    pass
            except (DependencyError, asyncpg.PostgresError, OSError) as exc:
                log.warning("outbox relay failed; will retry", extra={"error": repr(exc)})
            with contextlib.suppress(
                asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError
            ):
                await self.measure()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
        # drain what is left, once, on the way out
        try:
            while await self.relay_once() > 0:
                pass
        except (DependencyError, asyncpg.PostgresError, OSError):
            log.warning("outbox not fully drained at shutdown; it will be relayed on restart")
