"""``alerts.v1`` as a delivery channel under a burst: thousands of warning versions due at once
reach the topic, each once, with no send timing out on the producer's queue."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from services.alerting.adapters.channels.kafka import KafkaChannel
from services.alerting.app import MIGRATIONS
from services.alerting.workers.delivery import DeliveryWorker, RetryPolicy
from shared.clock import ManualClock
from shared.contracts import Topics
from shared.db import create_pool, migrate
from shared.kafka import EventProducer, ensure_topics
from tests.kafka_util import read_all

T0 = datetime(2026, 7, 1, tzinfo=UTC)
N = 3000


async def test_a_burst_of_versions_reaches_alerts_v1_once_each_without_timeouts(
    database, broker, topic_prefix
):
    """aiokafka queues one batch per partition, and a send waits for that slot for at most
    the request timeout (here 2 s, as a broker under load makes it): versions sent as messages
    of their own, 200 at a time, queued behind each other and 1,855 of 3,000 timed out. The
    channel now takes the round's rows as batches."""
    topic = Topics(topic_prefix).alerts
    await ensure_topics(broker.bootstrap, [topic])
    pool = await create_pool(database)
    producer = await EventProducer.start(broker.bootstrap, request_timeout_ms=2000)
    try:
        await migrate(pool, "alerting", MIGRATIONS)
        await pool.execute(
            """INSERT INTO alerting.warnings (id, hazard, region_code, level, state, identifier)
               SELECT 'w' || i, 'flood', '110101001000', 4, 'cancelled', 'ID' || i
                 FROM generate_series(1, $1) AS i""",
            N,
        )
        await pool.execute(
            """INSERT INTO alerting.warning_versions (warning_id, version, msg_type, level,
                   identifier, sent, headline, description, station_ids, cause_event)
               SELECT 'w' || i, 1, 'Alert', 4, 'ID' || i, $2, 'h', 'd', '{WL1}', 'e' || i
                 FROM generate_series(1, $1) AS i""",
            N,
            T0,
        )
        await pool.execute(
            """INSERT INTO alerting.deliveries (warning_id, version, recipient, channel, target,
                   idempotency_key, next_attempt_at)
               SELECT 'w' || i, 1, 'topic:alerts', 'kafka', $2, 'k' || i, $3
                 FROM generate_series(1, $1) AS i""",
            N,
            topic,
            T0,
        )
        worker = DeliveryWorker(
            pool=pool,
            channels={},
            batch_channels={"kafka": KafkaChannel(producer)},
            clock=ManualClock(T0),
            policy=RetryPolicy(max_attempts=8, base_s=0.01, cap_s=0.05),
            batch=N,
            concurrency=200,
            rng=random.Random(1),
        )
        assert await worker.run_once() == N
        rows = await pool.fetchrow(
            """SELECT count(*) FILTER (WHERE state = 'sent') AS sent,
                      count(*) FILTER (WHERE last_error IS NOT NULL) AS errors,
                      max(attempts) AS attempts,
                      min(last_error) AS error
                 FROM alerting.deliveries"""
        )
        assert dict(rows.items()) == {"sent": N, "errors": 0, "attempts": 1, "error": None}
        published = await read_all(broker.bootstrap, topic)
        assert len(published) == N
        assert len({p["warning_id"] for p in published}) == N
    finally:
        await producer.stop()
        await pool.close()
