"""The staged runner's pipeline on the real broker: a batch is written while the one before it
publishes, yet publishing keeps the batches' order, every batch's effect happens once, a failed
batch takes the ones prepared after it back (newest first) and offsets are committed in order.

The handler here is a recorder (its "store" and "publish" are entries in a log), so that the
order of the steps can be asserted; the runner, the consumer and the broker are the real ones."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from shared.clock import SystemClock
from shared.errors import DatabaseError, QianshaoError
from shared.kafka import (
    IN_HAND,
    BatchResult,
    ConsumerRunner,
    EventProducer,
    Message,
    RunnerConfig,
    StagedHandler,
    earlier,
    ensure_topics,
    make_consumer,
)
from tests.kafka_util import committed, produce

N = 60  # messages, in batches of BATCH
BATCH = 5


class Broken(QianshaoError):
    code = "broken"
    retriable = False


@dataclass
class Prepared:
    numbers: list[int]


@dataclass
class Recorder:
    """A staged handler whose effects are a log: ("store", first number of the batch),
    ("publish", n) for each number, ("discard", first). ``faults`` maps a batch's first number
    to the errors its completions raise, one per try, before the store."""

    faults: dict[int, list[Exception]] = field(default_factory=dict)
    log: list[tuple[str, int]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def process(self, batch: Sequence[Message]) -> BatchResult:
        prepared = await self.prepare(batch)
        try:
            return await self.complete(prepared)
        except BaseException:
            self.discard(prepared)
            raise

    async def prepare(self, batch: Sequence[Message]) -> Prepared:
        return Prepared([int(m.value) for m in batch])

    async def complete(
        self, prepared: Prepared, after: asyncio.Future[BatchResult] | None = None
    ) -> BatchResult:
        first = prepared.numbers[0]
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            faults = self.faults.get(first)
            if faults:
                raise faults.pop(0)
            self.log.append(("store", first))
            await asyncio.sleep(0.02)  # the write's round trip
            await earlier(after)
            for n in prepared.numbers:
                self.log.append(("publish", n))
            await asyncio.sleep(0.01)  # the broker's acknowledgement
            return BatchResult()
        finally:
            self.in_flight -= 1

    def discard(self, prepared: Prepared) -> None:
        self.log.append(("discard", prepared.numbers[0]))

    def published(self) -> list[int]:
        return [n for step, n in self.log if step == "publish"]


async def run_through(broker, topic: str, group: str, handler: Recorder) -> None:
    producer = await EventProducer.start(broker.bootstrap)
    runner = ConsumerRunner(
        lambda: make_consumer(broker.bootstrap, [topic], group_id=group),
        handler,
        producer,
        RunnerConfig(
            name="pipeline",
            topics=[topic],
            max_records=BATCH,
            dlq_topic=lambda t: f"{t}.dlq",
            retry_initial_s=0.02,
        ),
        SystemClock(),
        service="test",
    )
    task = asyncio.create_task(runner.run())
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while await committed(broker.bootstrap, group, topic) < N:
            assert asyncio.get_running_loop().time() < deadline, "not all committed"
            assert not task.done(), task
            await asyncio.sleep(0.1)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)
        await producer.stop()


@pytest.fixture
async def topic(broker, topic_prefix):
    name = f"{topic_prefix}pipeline"
    await ensure_topics(broker.bootstrap, [name, f"{name}.dlq"], partitions=1)
    await produce(broker.bootstrap, name, [("k", str(i).encode()) for i in range(N)])
    return name


async def test_a_batch_is_written_while_the_one_before_publishes_and_order_is_kept(
    broker, topic, topic_prefix
):
    handler = Recorder()
    assert isinstance(handler, StagedHandler)
    await run_through(broker, topic, f"{topic_prefix}g", handler)
    assert handler.published() == list(range(N))  # once each, in order
    assert handler.most_in_flight >= 2  # the pipeline did overlap completions
    assert handler.most_in_flight <= IN_HAND
    # some batch's write began before the batch before it had published
    stores = {n: i for i, (step, n) in enumerate(handler.log) if step == "store"}
    last_publish = {
        n - n % BATCH: i for i, (step, n) in enumerate(handler.log) if step == "publish"
    }
    assert any(stores[b + BATCH] < last_publish[b] for b in range(0, N - BATCH, BATCH))


async def test_a_retried_batch_holds_back_the_later_ones_and_nothing_is_published_twice(
    broker, topic, topic_prefix
):
    # batch 10 fails twice on the database, after the batches after it have begun
    handler = Recorder(
        faults={10: [DatabaseError("connection lost"), DatabaseError("connection lost")]}
    )
    await run_through(broker, topic, f"{topic_prefix}g", handler)
    assert handler.published() == list(range(N))
    assert not [n for step, n in handler.log if step == "discard"]


async def test_a_batch_failing_for_good_undoes_the_later_ones_newest_first(
    broker, topic, topic_prefix
):
    handler = Recorder(faults={20: [Broken("no retry cures this")]})
    await run_through(broker, topic, f"{topic_prefix}g", handler)
    published = handler.published()
    assert Counter(published) == Counter(range(N))  # each once: later batches waited on it
    assert published == sorted(published)
    discards = [n for step, n in handler.log if step == "discard"]
    # batch 20 and whatever was prepared after it, newest first
    assert discards[-1] == 20
    assert discards == sorted(discards, reverse=True)
