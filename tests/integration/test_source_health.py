"""Station and source health on the real database and broker: last seen recorded by the consumer,
offline/online transitions published once each, online rates per enterprise, message rates per
source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from prometheus_client import REGISTRY

from services.ingest.adapters.health import online_rates, source_health
from services.ingest.adapters.recent import RecentReadings
from services.ingest.adapters.stations import StationCache
from services.ingest.adapters.store import ReadingStore
from services.ingest.app import MIGRATIONS
from services.ingest.domain.validation import HISTORY
from services.ingest.workers.consumer import IngestHandler
from services.ingest.workers.health import HealthSweep
from shared.clock import ManualClock
from shared.contracts import Topics
from shared.db import create_pool, migrate
from shared.kafka import EventProducer, Message, ensure_topics
from tests.kafka_util import read_all

NOW = datetime(2026, 7, 1, 12, tzinfo=UTC)


@pytest.fixture
async def db(database):
    pool = await create_pool(database)
    await migrate(pool, "ingest", MIGRATIONS, storage="native")
    await pool.executemany(
        """INSERT INTO ingest.stations
               (id, name, kind, region_code, owner_enterprise, interval_s, maintenance)
           VALUES ($1, $1, 'combustible_gas', $2, $3, 300, $4)""",
        [
            ("G1", "110101001001", "E1", False),
            ("G2", "110101001001", "E1", False),
            ("G3", "110101002001", "E2", False),  # never reports
            ("G4", "110101002001", "E2", True),  # in maintenance: not judged
        ],
    )
    yield pool
    await pool.close()


def message(topic: str, offset: int, station: str, ts: datetime) -> Message:
    body = {
        "source": "platA",
        "station_id": station,
        "metric": "combustible_gas",
        "ts": ts.isoformat(),
        "value": 3.0,
        "unit": "%LEL",
    }
    return Message(topic, 0, offset, station.encode(), orjson.dumps(body))


async def test_offline_and_online_are_announced_once_and_rates_follow(db, broker, topic_prefix):
    topics = Topics(topic_prefix)
    await ensure_topics(broker.bootstrap, [topics.readings, topics.station_health])
    producer = await EventProducer.start(broker.bootstrap)
    clock = ManualClock(NOW)
    handler = IngestHandler(
        store=ReadingStore(db, storage="native"),
        stations=StationCache(db),
        producer=producer,
        topics=topics,
        clock=clock,
        recent=RecentReadings(db, keep=HISTORY),
        pool=db,
        health=db,
    )
    sweep = HealthSweep(db, producer, topics, clock, factor=3.0)
    try:
        await handler.process(
            [
                message(topics.obs_sensor, 0, "G1", NOW - timedelta(minutes=1)),
                message(topics.obs_sensor, 1, "G2", NOW - timedelta(hours=1)),
                message(topics.obs_sensor, 2, "G2", NOW - timedelta(minutes=50)),
            ]
        )
        first = await sweep.sweep()
        assert [(e.station_id, e.online) for e in first] == [("G2", False)]  # 50 min > 15 min
        assert await sweep.sweep() == []  # nothing changed: nothing announced again

        rates = {
            r.group: r
            for r in await online_rates(
                db, by="enterprise", region_prefix="", now=clock.now(), factor=3.0
            )
        }
        assert (rates["E1"].stations, rates["E1"].online, rates["E1"].rate) == (2, 1, 0.5)
        assert rates["E1"].below_target is True
        assert (rates["E2"].stations, rates["E2"].online) == (1, 0)  # G4 is in maintenance

        clock.advance(20 * 60)  # G1 silent for 21 minutes now
        await handler.process([message(topics.obs_sensor, 3, "G2", clock.now())])
        second = await sweep.sweep()
        assert sorted((e.station_id, e.online) for e in second) == [("G1", False), ("G2", True)]
        # the gauges the system alerts read: G1 offline, G3 never reported, G4 not judged
        assert REGISTRY.get_sample_value("qianshao_ingest_stations", {"county": "110101"}) == 3
        offline = REGISTRY.get_sample_value(
            "qianshao_ingest_stations_offline", {"county": "110101"}
        )
        assert offline == 2
        last = REGISTRY.get_sample_value(
            "qianshao_ingest_source_last_seen_timestamp_seconds",
            {"source": "platA", "topic": topics.obs_sensor},
        )
        assert last == clock.now().timestamp()
        towns = await online_rates(
            db, by="township", region_prefix="110101001", now=clock.now(), factor=3.0
        )
        assert [(t.group, t.online, t.stations) for t in towns] == [("110101001", 1, 2)]

        sources = await source_health(db, now=clock.now())
        assert [(s.source, s.topic, s.messages_5min) for s in sources] == [
            ("platA", topics.obs_sensor, 1)  # the last one; the first three are 20 min old
        ]
        assert sources[0].last_seen == clock.now()
    finally:
        await producer.stop()
    published = await read_all(broker.bootstrap, topics.station_health)
    # once each (partitions are read one after the other, so compare as a sorted list)
    assert sorted((p["station_id"], p["online"]) for p in published) == [
        ("G1", False),
        ("G2", False),
        ("G2", True),
    ]
    assert len({p["event_id"] for p in published}) == 3
