"""The consumer runner's rules, as one suite that runs on the in-memory broker
(``tests/unit/test_runner_memory.py``) and on the real one (``tests/integration/
test_runner_kafka.py``), each module giving the ``backend`` fixture:

- offsets are committed only after the handler's effect: a crash before the commit re-delivers;
- poison has a name and a place: the dead-letter topic, with the reason and the payload, while
  the good messages of its batch still go through;
- a dependency out of reach is retried, never blamed on the messages;
- a staged handler's batches overlap, yet every batch's effect happens once and in order, and a
  batch that fails for good takes the ones prepared after it back, newest first.

The handlers here record what they did, so that the order of the steps can be asserted."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from shared.clock import SystemClock
from shared.errors import DatabaseError, QianshaoError
from shared.kafka import (
    IN_HAND,
    BatchHandler,
    BatchResult,
    ConsumerRunner,
    InvalidMessage,
    Received,
    RunnerConfig,
    StagedHandler,
    earlier,
    no_value,
)
from tests.runner_backends import Backend

N = 60  # messages, in batches of BATCH
BATCH = 5


class Broken(QianshaoError):
    code = "broken"
    retriable = False


class Unreachable(Exception):
    """A driver's own "out of reach" error, as the runner's ``transient`` errors name it."""


@dataclass
class Log:
    """A plain handler that records each value it processes. ``poison``: values it refuses by
    raising; ``faults``: errors raised, one per try, for a batch that holds the value; values
    ``dead`` are returned as dead letters with the reason ``refused``."""

    poison: set[int] = field(default_factory=set)
    dead: set[int] = field(default_factory=set)
    faults: dict[int, list[Exception]] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)
    tries: int = 0

    async def process(self, batch: Sequence[Received]) -> BatchResult:
        self.tries += 1
        out: list[InvalidMessage] = []
        for m in batch:
            if m.value is None:
                out.append(no_value(m))
                continue
            n = int(m.value)
            for key, errors in self.faults.items():
                if key == n and errors:
                    raise errors.pop(0)
            if n in self.poison:
                if len(batch) == 1:
                    raise InvalidMessage(m, "poison", f"{n} is poison")
                raise Broken("a message of this batch cannot be handled")
        for m in batch:
            if m.value is None:
                continue
            n = int(m.value)
            if n in self.dead:
                out.append(InvalidMessage(m, "refused", f"{n} is refused"))
            else:
                self.done.append(n)
        return BatchResult(dead_letters=out)


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

    async def process(self, batch: Sequence[Received]) -> BatchResult:
        prepared = await self.prepare(batch)
        try:
            return await self.complete(prepared)
        except BaseException:
            self.discard(prepared)
            raise

    async def prepare(self, batch: Sequence[Received]) -> Prepared:
        return Prepared([int(m.value or b"0") for m in batch])

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


@dataclass
class Run:
    backend: Backend
    topic: str
    group: str

    async def until(
        self,
        handler: BatchHandler,
        done: Callable[[], Awaitable[bool]],
        *,
        before_commit: Callable[[], Awaitable[None]] | None = None,
    ) -> ConsumerRunner:
        """Run a runner until ``done``, then stop it (it finishes its batch and commits)."""
        producer = await self.backend.producer()
        runner = ConsumerRunner(
            self.backend.consumer_factory([self.topic], self.group),
            handler,
            producer,
            RunnerConfig(
                name="suite",
                topics=[self.topic],
                max_records=BATCH,
                retry_initial_s=0.01,
                retry_max_s=0.05,
                transient=(Unreachable,),
            ),
            SystemClock(),
            service="test",
            before_commit=before_commit,
        )
        task = asyncio.create_task(runner.run())
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while not await done():
                assert asyncio.get_running_loop().time() < deadline, "not done in time"
                if task.done():
                    task.result()  # a crash of the runner is the test's to see
                    raise AssertionError("the runner ended")
                await asyncio.sleep(0.02)
        finally:
            runner.stop()
            try:
                await asyncio.wait_for(task, 30)
            finally:
                await self.backend.close_producer(producer)
        return runner

    async def all_committed(self, n: int = N) -> bool:
        return await self.backend.committed(self.group, self.topic) >= n


async def numbers(backend: Backend, n: int = N, *, partitions: int = 1) -> Run:
    name = f"t{uuid.uuid4().hex[:8]}.suite"
    await backend.topics([name, f"{name}.dlq"], partitions=partitions)
    await backend.produce(name, [("k", str(i).encode()) for i in range(n)])
    return Run(backend, name, f"{name}.g")


# -- the sequential runner ----------------------------------------------------------------------


async def test_every_message_is_handled_once_and_committed(backend: Backend) -> None:
    run = await numbers(backend, partitions=3)
    handler = Log()
    await run.until(handler, run.all_committed)
    assert sorted(handler.done) == list(range(N))


async def test_a_crash_before_the_commit_delivers_the_batch_again(backend: Backend) -> None:
    run = await numbers(backend)

    class Crash(BaseException):
        pass

    crashed: list[int] = []

    async def crash_once() -> None:
        if not crashed:
            crashed.append(len(first.done))
            raise Crash

    first = Log()
    with pytest.raises(Crash):
        await run.until(first, run.all_committed, before_commit=crash_once)
    assert crashed
    assert crashed[0] > 0  # the first batch's effect happened, its commit did not
    assert await backend.committed(run.group, run.topic) == 0
    second = Log()
    await run.until(second, run.all_committed)
    assert second.done == list(range(N))  # from the last commit on: the first batch again


async def test_poison_is_dead_lettered_with_its_reason_and_its_batch_goes_on(
    backend: Backend,
) -> None:
    run = await numbers(backend)
    handler = Log(poison={7}, dead={12})
    await run.until(handler, run.all_committed)
    assert sorted(handler.done) == [n for n in range(N) if n not in (7, 12)]
    letters = await backend.read(f"{run.topic}.dlq")
    assert {(d["payload"], d["reason"]) for d in letters} == {("7", "poison"), ("12", "refused")}
    assert all(d["topic"] == run.topic and d["service"] == "test" for d in letters)


async def test_a_tombstone_is_dead_lettered_with_an_empty_payload(backend: Backend) -> None:
    run = await numbers(backend, 3)
    await backend.produce(run.topic, [("k", None)])
    handler = Log()
    await run.until(handler, lambda: run.all_committed(4))
    [letter] = await backend.read(f"{run.topic}.dlq")
    assert (letter["reason"], letter["payload"], letter["offset"]) == ("no_value", "", 3)
    assert handler.done == [0, 1, 2]


async def test_a_dependency_out_of_reach_is_retried_never_dead_lettered(
    backend: Backend,
) -> None:
    run = await numbers(backend, 10)
    handler = Log(
        faults={3: [DatabaseError("connection lost"), Unreachable("no route"), OSError("reset")]}
    )
    await run.until(handler, lambda: run.all_committed(10))
    assert handler.done == list(range(10))
    assert handler.tries >= 4  # the batch of 3, three times in vain
    assert await backend.read(f"{run.topic}.dlq") == []


async def test_an_unexpected_error_isolates_the_message_that_raised_it(
    backend: Backend,
) -> None:
    run = await numbers(backend, 10)
    handler = Log(faults={4: [ValueError("a bug"), ValueError("a bug")]})
    await run.until(handler, lambda: run.all_committed(10))
    [letter] = await backend.read(f"{run.topic}.dlq")
    assert (letter["payload"], letter["reason"]) == ("4", "processing_error")
    assert "a bug" in letter["detail"]
    assert handler.done == [n for n in range(10) if n != 4]


# -- the staged runner ----------------------------------------------------------------------------


async def test_a_batch_is_written_while_the_one_before_publishes_and_order_is_kept(
    backend: Backend,
) -> None:
    run = await numbers(backend)
    handler = Recorder()
    assert isinstance(handler, StagedHandler)
    await run.until(handler, run.all_committed)
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
    backend: Backend,
) -> None:
    run = await numbers(backend)
    # batch 10 fails twice on the database, after the batches after it have begun
    handler = Recorder(
        faults={10: [DatabaseError("connection lost"), DatabaseError("connection lost")]}
    )
    await run.until(handler, run.all_committed)
    assert handler.published() == list(range(N))
    assert not [n for step, n in handler.log if step == "discard"]


async def test_a_batch_failing_for_good_undoes_the_later_ones_newest_first(
    backend: Backend,
) -> None:
    run = await numbers(backend)
    handler = Recorder(faults={20: [Broken("no retry cures this")]})
    await run.until(handler, run.all_committed)
    published = handler.published()
    assert Counter(published) == Counter(range(N))  # each once: later batches waited on it
    assert published == sorted(published)
    discards = [n for step, n in handler.log if step == "discard"]
    # batch 20 and whatever was prepared after it, newest first
    assert discards[-1] == 20
    assert discards == sorted(discards, reverse=True)
