"""The consumer runner on the real broker and the real database: a crash between the durable write
and the offset commit loses nothing and stores nothing twice; poison messages are dead-lettered
with a reason while the good messages of the same batch are stored."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from services.ingest.adapters.recent import RecentReadings
from services.ingest.adapters.stations import StationCache
from services.ingest.adapters.store import ReadingStore
from services.ingest.app import MIGRATIONS
from services.ingest.domain.validation import HISTORY
from services.ingest.workers.consumer import IngestHandler
from shared.clock import SystemClock
from shared.contracts import Topics
from shared.db import create_pool, migrate
from shared.errors import QianshaoError
from shared.kafka import (
    ConsumerRunner,
    EventProducer,
    Message,
    RunnerConfig,
    StagedHandler,
    ensure_topics,
    make_consumer,
)
from tests.factories import add_station
from tests.kafka_util import committed, produce, read_all


class Crash(Exception):
    pass


@pytest.fixture
async def ingest_db(database):
    pool = await create_pool(database)
    await migrate(pool, "ingest", MIGRATIONS, storage="native")
    await add_station(pool, "RG1", name="gauge", kind="rain_gauge")
    yield pool
    await pool.close()


def new_handler(pool, producer: EventProducer, topics: Topics) -> IngestHandler:
    """The ingest consumer's handler as the service builds it (fresh: no recent readings)."""
    return IngestHandler(
        store=ReadingStore(pool, storage="native"),
        stations=StationCache(pool),
        producer=producer,
        topics=topics,
        clock=SystemClock(),
        recent=RecentReadings(pool, keep=HISTORY),
        pool=pool,
    )


async def run_until_stored(
    runner: ConsumerRunner, pool, n: int, commits: tuple[str, str, str, int] | None = None
) -> None:
    """Run the runner until ``n`` readings are stored and, with ``commits`` (bootstrap, group,
    topic, messages), that many messages are committed; let it commit, and stop it."""
    task = asyncio.create_task(runner.run())
    deadline = asyncio.get_running_loop().time() + 60
    while await pool.fetchval("SELECT count(*) FROM ingest.readings") < n or (
        commits is not None and await committed(*commits[:3]) < commits[3]
    ):
        assert asyncio.get_running_loop().time() < deadline, "readings not all stored"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # let it finish committing
    runner.stop()
    await asyncio.wait_for(task, 30)


def raw(i: int, t0: datetime) -> bytes:
    return orjson.dumps(
        {
            "source": "feed",
            "station_id": "RG1",
            "metric": "rainfall",
            "ts": (t0 + timedelta(minutes=i)).isoformat(),
            "value": float(i % 50),
            "unit": "mm",
        }
    )


async def test_crash_after_write_before_commit_loses_and_doubles_nothing(
    ingest_db, broker, topic_prefix
):
    topics = Topics(topic_prefix)
    await ensure_topics(broker.bootstrap, topics.all())
    t0 = datetime(2026, 7, 1, tzinfo=UTC)
    n = 600
    poison = [
        (None, b"{not json"),
        ("RG1", None),  # a tombstone
        (
            "X",
            orjson.dumps(
                {
                    "source": "feed",
                    "station_id": "NOPE",
                    "metric": "rainfall",
                    "ts": t0.isoformat(),
                    "value": 1.0,
                }
            ),
        ),
        (
            "RG1",
            orjson.dumps(
                {
                    "source": "feed",
                    "station_id": "RG1",
                    "metric": "rainfall",
                    "ts": t0.isoformat(),
                    "value": 5000.0,
                    "unit": "mm",
                }
            ),
        ),
    ]
    await produce(
        broker.bootstrap, topics.obs_sensor, [("RG1", raw(i, t0)) for i in range(n)] + poison
    )

    producer = await EventProducer.start(broker.bootstrap)
    group = f"{topic_prefix}ingest"

    def runner(before_commit=None, max_records=250):
        handler = new_handler(ingest_db, producer, topics)
        return ConsumerRunner(
            lambda: make_consumer(broker.bootstrap, [topics.obs_sensor], group_id=group),
            handler,
            producer,
            RunnerConfig(
                name="t",
                topics=[topics.obs_sensor],
                max_records=max_records,
                dlq_topic=lambda _t: topics.readings_dlq,
            ),
            SystemClock(),
            service="ingest",
            before_commit=before_commit,
        )

    async def crash():
        raise Crash("killed between the write and the commit")

    try:
        first = runner(before_commit=crash)
        with pytest.raises(Crash):
            await first.run()
        stored_before_restart = await ingest_db.fetchval("SELECT count(*) FROM ingest.readings")
        assert stored_before_restart > 0  # the first batch was written, then the process died

        # the batches prepared after the crashed one may all be stored by now: what tells that
        # the restarted runner is done is its commits
        await run_until_stored(
            runner(), ingest_db, n, commits=(broker.bootstrap, group, topics.obs_sensor, n + 4)
        )
    finally:
        await producer.stop()

    assert await ingest_db.fetchval("SELECT count(*) FROM ingest.readings") == n
    published = await read_all(broker.bootstrap, topics.readings)
    # publication is at-least-once (the crashed batch is published again); ids make it harmless
    assert len({p["event_id"] for p in published}) == n
    dead = await read_all(broker.bootstrap, topics.readings_dlq)
    by_offset = {(d["partition"], d["offset"]): d["reason"] for d in dead}
    assert sorted(by_offset.values()) == [
        "invalid_json",
        "no_value",
        "out_of_hard_range",
        "unknown_station",
    ]
    assert [bool(d["payload"]) for d in dead] == [d["reason"] != "no_value" for d in dead]


async def test_spikes_and_stuck_sensors_are_flagged_doubtful_across_a_restart(
    ingest_db, broker, topic_prefix
):
    """Water level every 5 minutes: a jump of 1 m in 5 minutes is a spike (3 m/h at most), the
    same value 24 times running is a stuck sensor; the history survives a new handler (restart)
    because it is loaded from the stored readings."""
    await add_station(ingest_db, "WL1", name="level")
    topics = Topics(topic_prefix)
    await ensure_topics(broker.bootstrap, [topics.readings])
    producer = await EventProducer.start(broker.bootstrap)
    t0 = datetime(2026, 7, 1, tzinfo=UTC)

    def handler() -> IngestHandler:
        return new_handler(ingest_db, producer, topics)

    def batch(values: list[float], start: int) -> list[Message]:
        return [
            Message(
                topics.obs_hydro,
                0,
                start + i,
                b"WL1",
                orjson.dumps(
                    {
                        "source": "hydro",
                        "station_id": "WL1",
                        "metric": "water_level",
                        "ts": (t0 + timedelta(minutes=5 * (start + i))).isoformat(),
                        "value": v,
                        "unit": "m",
                    }
                ),
            )
            for i, v in enumerate(values)
        ]

    try:
        steady = [2.0 + 0.01 * (i % 5) for i in range(10)]
        await handler().process(batch([*steady, 3.2, 2.05], 0))  # 3.2: +1.16 m in 5 min
        # restarted: a new handler loads the history from the database
        await handler().process(batch([2.06] * 30, 12))
    finally:
        await producer.stop()
    rows = await ingest_db.fetch(
        """SELECT extract(epoch FROM ts - $1)::int / 300 AS step, quality, checks
             FROM ingest.readings WHERE station_id = 'WL1' ORDER BY ts""",
        t0,
    )
    flagged = {r["step"]: (r["quality"], list(r["checks"])) for r in rows if r["checks"]}
    assert flagged[10] == (1, ["spike"])
    # 2.05 after the spike is judged against the last trusted value (2.04), not the spike
    assert 11 not in flagged
    # 2.06 from step 12 on: the 24th equal value (step 35) and every one after is stuck
    assert sorted(flagged) == [10, *range(35, 42)]
    assert all(flagged[s] == (1, ["stuck"]) for s in range(35, 42))


async def test_a_station_may_ask_for_a_stuck_check_longer_than_the_history_loaded(
    ingest_db, broker, topic_prefix
):
    """stuck_count 60 at one station: the 60th equal reading is stuck. After a restart the key
    is loaded from its last HISTORY (48) readings and counts on from that run: cautious, it
    flags 2 readings later than an unbroken count would."""
    await add_station(
        ingest_db, "WL2", name="level", attributes={"stuck_count": {"water_level": 60}}
    )
    topics = Topics(topic_prefix)
    await ensure_topics(broker.bootstrap, [topics.readings])
    producer = await EventProducer.start(broker.bootstrap)
    t0 = datetime(2026, 7, 1, tzinfo=UTC)

    def batch(n: int, start: int) -> list[Message]:
        return [
            Message(
                topics.obs_hydro,
                0,
                start + i,
                b"WL2",
                orjson.dumps(
                    {
                        "source": "hydro",
                        "station_id": "WL2",
                        "metric": "water_level",
                        "ts": (t0 + timedelta(minutes=5 * (start + i))).isoformat(),
                        "value": 1.5,
                        "unit": "m",
                    }
                ),
            )
            for i in range(n)
        ]

    async def flagged() -> list[int]:
        rows = await ingest_db.fetch(
            """SELECT extract(epoch FROM ts - $1)::int / 300 AS step FROM ingest.readings
                WHERE station_id = 'WL2' AND 'stuck' = ANY(checks) ORDER BY ts""",
            t0,
        )
        return [r["step"] for r in rows]

    try:
        await new_handler(ingest_db, producer, topics).process(batch(62, 0))
        assert await flagged() == [59, 60, 61]  # the 60th equal reading and those after it
        await ingest_db.execute("DELETE FROM ingest.readings WHERE station_id = 'WL2'")
        await new_handler(ingest_db, producer, topics).process(batch(50, 0))
        assert await flagged() == []
        # restarted: the last 48 of the 50 give a run of 48, which counts on
        await new_handler(ingest_db, producer, topics).process(batch(15, 50))
        assert await flagged() == [61, 62, 63, 64]
    finally:
        await producer.stop()


class DropsConnection:
    """A handler whose database connection drops on the first two batches (as when PostgreSQL
    restarts), raising the driver's own error rather than a wrapped one."""

    def __init__(self, inner: IngestHandler) -> None:
        self.inner = inner
        self.failures = 0

    async def process(self, batch):
        if self.failures < 2:
            self.failures += 1
            raise asyncpg.exceptions.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            ) from ConnectionResetError(104, "Connection reset by peer")
        return await self.inner.process(batch)


async def test_a_dropped_database_connection_is_retried_never_dead_lettered(
    ingest_db, broker, topic_prefix
):
    topics = Topics(topic_prefix)
    await ensure_topics(broker.bootstrap, topics.all())
    t0 = datetime(2026, 7, 2, tzinfo=UTC)
    n = 40
    await produce(broker.bootstrap, topics.obs_sensor, [("RG1", raw(i, t0)) for i in range(n)])
    producer = await EventProducer.start(broker.bootstrap)
    handler = DropsConnection(new_handler(ingest_db, producer, topics))
    runner = ConsumerRunner(
        lambda: make_consumer(
            broker.bootstrap, [topics.obs_sensor], group_id=f"{topic_prefix}ingest"
        ),
        handler,
        producer,
        RunnerConfig(
            name="t",
            topics=[topics.obs_sensor],
            dlq_topic=lambda _t: topics.readings_dlq,
            retry_initial_s=0.05,
        ),
        SystemClock(),
        service="ingest",
    )
    try:
        await run_until_stored(runner, ingest_db, n)
    finally:
        await producer.stop()
    assert handler.failures == 2
    assert await read_all(broker.bootstrap, topics.readings_dlq) == []


class Broken(QianshaoError):
    code = "broken"
    retriable = False


class FailsWhileStaged:
    """The ingest handler, staged, whose second completion fails for good (the runner must undo
    it and the batch prepared after it, newest first, and take the sequential path) and whose
    fourth fails on a dropped connection (retried with the same preparation)."""

    def __init__(self, inner: IngestHandler) -> None:
        self.inner = inner
        self.completions = 0
        self.discards = 0

    async def process(self, batch):
        return await self.inner.process(batch)

    async def prepare(self, batch):
        return await self.inner.prepare(batch)

    async def complete(self, prepared, after=None):
        self.completions += 1
        if self.completions == 2:
            raise Broken("a fault no retry cures")
        if self.completions == 4:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
        return await self.inner.complete(prepared, after)

    def discard(self, prepared):
        self.discards += 1
        self.inner.discard(prepared)


async def test_a_staged_runner_judges_every_batch_as_a_sequential_one_would(
    ingest_db, broker, topic_prefix
):
    """The ingest runner prepares the next batch (checks against recent history) while the last
    is stored. Batches of 5 water levels through a failure that is undone and one that is
    retried: the spike and stuck flags, the rows and the published events are exactly those of
    the sequential run above, and nothing is dead-lettered."""
    await add_station(ingest_db, "WL1", name="level")
    topics = Topics(topic_prefix)
    await ensure_topics(broker.bootstrap, topics.all())
    t0 = datetime(2026, 7, 1, tzinfo=UTC)
    values = [*(2.0 + 0.01 * (i % 5) for i in range(10)), 3.2, 2.05, *([2.06] * 30)]
    await produce(
        broker.bootstrap,
        topics.obs_hydro,
        [
            (
                "WL1",
                orjson.dumps(
                    {
                        "source": "hydro",
                        "station_id": "WL1",
                        "metric": "water_level",
                        "ts": (t0 + timedelta(minutes=5 * i)).isoformat(),
                        "value": v,
                        "unit": "m",
                    }
                ),
            )
            for i, v in enumerate(values)
        ],
    )
    producer = await EventProducer.start(broker.bootstrap)
    handler = FailsWhileStaged(new_handler(ingest_db, producer, topics))
    assert isinstance(handler, StagedHandler)
    runner = ConsumerRunner(
        lambda: make_consumer(
            broker.bootstrap, [topics.obs_hydro], group_id=f"{topic_prefix}ingest"
        ),
        handler,
        producer,
        RunnerConfig(
            name="t",
            topics=[topics.obs_hydro],
            max_records=5,
            dlq_topic=lambda _t: topics.readings_dlq,
            retry_initial_s=0.05,
        ),
        SystemClock(),
        service="ingest",
    )
    try:
        await run_until_stored(runner, ingest_db, len(values))
    finally:
        await producer.stop()
    assert handler.completions >= 5
    assert handler.discards >= 1
    rows = await ingest_db.fetch(
        """SELECT extract(epoch FROM ts - $1)::int / 300 AS step, quality, checks
             FROM ingest.readings WHERE station_id = 'WL1' ORDER BY ts""",
        t0,
    )
    assert len(rows) == len(values)
    flagged = {r["step"]: (r["quality"], list(r["checks"])) for r in rows if r["checks"]}
    assert flagged[10] == (1, ["spike"])
    assert sorted(flagged) == [10, *range(35, 42)]
    assert all(flagged[s] == (1, ["stuck"]) for s in range(35, 42))
    assert await read_all(broker.bootstrap, topics.readings_dlq) == []
    published = await read_all(broker.bootstrap, topics.readings)
    assert len({p["event_id"] for p in published}) == len(values)


@pytest.mark.parametrize("kernel_name", ["native", "python"])
async def test_a_batch_of_many_chunks_puts_every_verdict_on_its_own_message(
    ingest_db, broker, topic_prefix, kernel_name
):
    """A batch is prepared in chunks of CHUNK messages; refusals and forecasts just before and
    after the chunks' seams are dead-lettered or stored against their own messages, and the
    good readings around them are stored and published, once each, with either kernel."""
    from services.ingest.domain import kernel
    from services.ingest.workers.consumer import CHUNK

    k = kernel.default(use_native=kernel_name == "native")
    assert k is not None
    topics = Topics(topic_prefix)
    await ensure_topics(broker.bootstrap, topics.all())
    t0 = datetime(2026, 7, 1, tzinfo=UTC)
    n = 2 * CHUNK + 10
    values = [raw(i, t0) for i in range(n)]
    doc = orjson.loads(values[0])
    spoilers = {
        CHUNK - 1: b"{not json",
        CHUNK: orjson.dumps({**doc, "station_id": "NOPE"}),
        CHUNK + 1: None,  # a tombstone
        2 * CHUNK - 1: orjson.dumps({**doc, "value": 5000.0}),
        2 * CHUNK: orjson.dumps({**doc, "kind": "forecast", "issued_at": t0.isoformat()}),
    }
    values = [spoilers.get(i, v) for i, v in enumerate(values)]
    batch = [Message(topics.obs_sensor, 0, i, b"RG1", v) for i, v in enumerate(values)]
    producer = await EventProducer.start(broker.bootstrap)
    try:
        handler = new_handler(ingest_db, producer, topics)
        handler._kernel = k
        handler._store = ReadingStore(ingest_db, storage="native", kernel=k)
        result = await handler.process(batch)
    finally:
        await producer.stop()
    assert [(d.kafka_message.offset, d.reason) for d in result.dead_letters] == [
        (CHUNK - 1, "invalid_json"),
        (CHUNK + 1, "no_value"),
        (CHUNK, "unknown_station"),
        (2 * CHUNK - 1, "out_of_hard_range"),
    ]
    stored = await ingest_db.fetch(
        "SELECT extract(epoch FROM ts - $1)::int / 60 AS i FROM ingest.readings ORDER BY ts", t0
    )
    assert [r["i"] for r in stored] == [i for i in range(n) if i not in spoilers]
    assert await ingest_db.fetchval("SELECT count(*) FROM ingest.forecasts") == 1
    published = await read_all(broker.bootstrap, topics.readings)
    assert len(published) == n - 4
    assert sum(p["kind"] == "forecast" for p in published) == 1
