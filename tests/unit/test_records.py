"""Whole Kafka record batches (shared._records) are byte for byte what aiokafka's own compiled
builder writes for the same messages: split at the same sizes, with the same CRC-32C, with and
without producer state (idempotence) and the transactional flag."""

from __future__ import annotations

import os
import random

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

from shared.kafka import BATCH_BYTES, _ReadyBatch, ready_batch_builder

records = ready_batch_builder()
TS = 1_782_864_000_123


def built() -> object:
    assert records is not None, "shared._records is not built (no C compiler at install?)"
    return records


def aiokafka_batches(items, size, *, transactional=False, state=(-1, -1, 0)):
    out, offset = [], 0
    b = DefaultRecordBatchBuilder(2, 0, int(transactional), *state, size)
    for key, value in items:
        if b.append(offset, TS, key, value, []) is None:
            out.append((bytes(b.build()), offset))
            b, offset = DefaultRecordBatchBuilder(2, 0, int(transactional), *state, size), 0
            assert b.append(offset, TS, key, value, []) is not None
        offset += 1
    if offset:
        out.append((bytes(b.build()), offset))
    return out


def messages(n: int, seed: int = 1):
    rnd = random.Random(seed)
    return [
        (
            None if i % 7 == 0 else rnd.randbytes(rnd.randint(0, 20)),
            None if i % 11 == 0 else rnd.randbytes(rnd.randint(0, 400)),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 9, 100, 4096, 100_000])
def test_crc32c_is_aiokafkas(n):
    data = os.urandom(n)
    assert built().crc32c(data) == calc_crc32c(data)


@pytest.mark.parametrize("size", [BATCH_BYTES, 16_384, 1000, 200, 70])
def test_batches_are_aiokafkas_bytes_split_where_it_splits(size):
    items = messages(3000)
    got = [(bytes(b), n) for b, n in built().batches(items, TS, size, False)]
    assert got == aiokafka_batches(items, size)
    assert sum(n for _, n in got) == len(items)


def test_producer_state_and_the_transactional_flag_are_sealed_as_aiokafka_writes_them():
    items = messages(50, seed=2)
    [(batch, n)] = built().batches(items, TS, BATCH_BYTES, False)
    ready = _ReadyBatch(batch, n, built().seal)
    ready._set_producer_state(1234, 5, 77)  # as the sender does for an idempotent producer
    assert bytes(ready._build()) == aiokafka_batches(items, BATCH_BYTES, state=(1234, 5, 77))[0][0]
    assert (ready.record_count(), ready.closed(), ready.append(key=b"k", value=b"v")) == (
        50,
        True,
        None,
    )
    [(txn, _)] = built().batches(items, TS, BATCH_BYTES, True)
    assert bytes(txn) == aiokafka_batches(items, BATCH_BYTES, transactional=True)[0][0]


def test_refuses_what_is_not_bytes():
    with pytest.raises(TypeError):
        built().batches([("k", b"v")], TS, BATCH_BYTES, False)
    with pytest.raises(TypeError):
        built().batches([(b"k",)], TS, BATCH_BYTES, False)
    with pytest.raises(ValueError, match="not a record batch"):
        built().seal(bytearray(10), 1, 1, 1)


def test_only_on_the_aiokafka_release_it_was_checked_against():
    assert ready_batch_builder("0.14.0") is records
    assert ready_batch_builder("0.15.0") is None


def test_the_compiled_message_maker_makes_the_runners_messages():
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from shared.kafka import Message

    make = built().message_maker(Message)
    record = SimpleNamespace(
        offset=7, key=None, value=b"v", timestamp=123, timestamp_type=1, headers=[("h", b"x")]
    )
    got = make(TopicPartition("t", 2), record)
    assert type(got) is Message
    assert got == Message("t", 2, 7, None, b"v", 123, 1, (("h", b"x"),))
    assert got.timestamp == 123
    with pytest.raises(AttributeError):
        make(TopicPartition("t", 2), SimpleNamespace(offset=1))
    with pytest.raises(TypeError):
        built().message_maker(dict)
