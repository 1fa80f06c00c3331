"""The ingest consumer's per-batch kernel: the compiled implementation is held to the Python one
(the same COPY bytes, the same events), and both to the contracts they serve (hashlib's BLAKE2b,
``stable_id``, the ``Reading`` model)."""

from __future__ import annotations

import hashlib
import math
import os
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest import kernel
from services.ingest.kernel import PYTHON, NativeKernel, published, reading_event_id
from services.ingest.store import Row
from services.ingest.validation import StationInfo
from shared.contracts import Reading, stable_id

NATIVE = kernel.native()
NOW = datetime(2026, 7, 1, 8, 0, 0, 250_000, tzinfo=UTC)
STATIONS = {
    s: StationInfo(s, "water_level", "110101001001") for s in ("A1", "B-2", "站点3", "C.4:x")
}


def native() -> NativeKernel:
    assert NATIVE is not None, "the compiled kernel is not built (no C compiler at install?)"
    return NATIVE


def test_the_compiled_kernel_is_built_and_chosen_by_default():
    assert native().name == "native"
    assert kernel.default().name == "native"
    assert kernel.default(use_native=False) is PYTHON


@pytest.mark.parametrize("n", [*range(0, 260), 1000, 4096])
def test_blake2b_is_hashlibs(n):
    data = os.urandom(n)
    assert native()._module.blake2b_16(data) == hashlib.blake2b(data, digest_size=16).digest()


offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
timestamps = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets
)
texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
rows = st.builds(
    Row,
    st.sampled_from(sorted(STATIONS)),
    st.sampled_from(["rainfall", "water_level", 'm"e\\t\nric']),
    timestamps,
    st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([-0.0, 1e16, 5e-324]),
    texts,
    st.sampled_from(["good", "doubtful", "bad"]),
    st.lists(texts, max_size=3).map(tuple),
    texts,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows, max_size=30))
def test_both_kernels_write_the_same_copy_stream(batch):
    assert native().copy_rows(batch) == PYTHON.copy_rows(batch)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows, max_size=20))
def test_both_kernels_make_the_same_events(batch):
    got, want = (
        native().reading_events(batch, STATIONS, NOW),
        PYTHON.reading_events(batch, STATIONS, NOW),
    )
    assert [k for k, _ in got] == [r.station_id for r in batch] == [k for k, _ in want]
    # the same JSON documents, to the character of every string (timestamps included)
    assert [orjson.loads(v) for _, v in got] == [orjson.loads(v) for _, v in want]


def test_a_repeated_key_is_seen_whatever_offset_it_is_written_in():
    t = datetime(2026, 7, 1, tzinfo=UTC)
    a = Row("A1", "rainfall", t, 1.0, "mm", "good", (), "s")
    same_instant = a._replace(ts=t.astimezone(ZoneInfo("Asia/Shanghai")), value=2.0)
    other_metric = a._replace(metric="water_level")
    later = a._replace(ts=t + timedelta(microseconds=1))
    for k in (native(), PYTHON):
        assert k.copy_rows([a, other_metric, later])[1] is True
        assert k.copy_rows([a, other_metric, later, same_instant])[1] is False
        assert k.copy_rows([])[1] is True


def test_event_ids_are_the_stable_ids_of_the_parts():
    t = NOW + timedelta(microseconds=123_456)
    beijing = t.astimezone(timezone(timedelta(hours=8)))
    old = datetime(1901, 3, 4, 5, 6, 7, 8, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))
    batch = [
        Row("A1", "rainfall", t, 1.0, "mm", "good", (), "s"),
        Row("A1", "rainfall", beijing, 1.0, "mm", "good", (), "s"),
        Row("站点3", "rainfall", old, 1.0, "mm", "good", (), "s"),
    ]
    ids = native()._module.event_ids(batch)
    micros = int(t.timestamp()) * 1_000_000 + t.microsecond
    assert micros == 1_782_892_800_373_456
    assert ids[0] == ids[1] == stable_id("reading", "A1", "rainfall", micros)
    assert ids[2] == reading_event_id("站点3", "rainfall", old)
    micros = (old - kernel.EPOCH) // kernel.MICROSECOND
    assert micros < 0
    assert ids[2] == stable_id("reading", "站点3", "rainfall", micros)


def test_events_parse_as_the_reading_they_stand_for():
    ts = datetime(2026, 7, 1, 16, 0, 0, 5, tzinfo=ZoneInfo("Asia/Shanghai"))
    row = Row("B-2", "water_level", ts, 2.75, "m", "doubtful", ("spike", "stuck"), "city")
    [(key, data)] = native().reading_events([row], STATIONS, NOW)
    got = Reading.model_validate_json(data)
    assert key == "B-2"
    assert got == Reading(
        event_id=reading_event_id("B-2", "water_level", ts),
        produced_at=NOW,
        station_id="B-2",
        region_code="110101001001",
        station_kind="water_level",
        metric="water_level",
        ts=ts,
        value=2.75,
        unit="m",
        quality="doubtful",
        quality_checks=["spike", "stuck"],
        source="city",
    )
    assert (
        got.model_dump()
        == Reading.model_validate_json(
            published(row, STATIONS["B-2"], got.event_id, NOW)
        ).model_dump()
    )


def test_a_non_finite_value_is_written_as_msgspec_writes_it():
    row = Row("A1", "x", NOW, math.inf, "u", "good", (), "s")
    [(_, got)] = native().reading_events([row], STATIONS, NOW)
    [(_, want)] = PYTHON.reading_events([row], STATIONS, NOW)
    assert orjson.loads(got)["value"] is None
    assert orjson.loads(got) == orjson.loads(want)


def test_what_the_compiled_kernel_is_not_written_for_goes_to_the_python_one():
    odd = timezone(timedelta(hours=5, minutes=30, seconds=15))  # LMT-like offsets
    row = Row("A1", "rainfall", datetime(1900, 1, 1, tzinfo=odd), 1.0, "mm", "good", (), "s")
    with pytest.raises(ValueError, match="seconds"):
        native()._module.reading_events([row], STATIONS, NOW)
    assert native().reading_events([row], STATIONS, NOW) == PYTHON.reading_events(
        [row], STATIONS, NOW
    )
    naive = row._replace(ts=datetime(2026, 7, 1))
    for k in (native(), PYTHON):
        with pytest.raises(ValueError, match="naive"):
            k.copy_rows([naive])


@pytest.mark.parametrize(
    "bad",
    [
        Row(1, "m", NOW, 1.0, "u", "good", (), "s"),  # type: ignore[arg-type]
        Row("A1", "m", "2026-07-01", 1.0, "u", "good", (), "s"),  # type: ignore[arg-type]
        Row("A1", "m", NOW, "1.0", "u", "good", (), "s"),  # type: ignore[arg-type]
        Row("A1", "m", NOW, 1.0, "u", "fine", (), "s"),
        Row("A1", "m", NOW, 1.0, "u", "good", (3,), "s"),  # type: ignore[arg-type]
        ("A1", "m"),
    ],
)
def test_malformed_rows_raise_instead_of_writing_garbage(bad):
    with pytest.raises((TypeError, ValueError, KeyError)):
        native()._module.copy_rows([bad])
    with pytest.raises((TypeError, ValueError, KeyError)):
        PYTHON.copy_rows([bad])


def test_an_unknown_station_is_a_key_error_not_a_crash():
    row = Row("nowhere", "m", NOW, 1.0, "u", "good", (), "s")
    with pytest.raises(KeyError):
        native().reading_events([row], STATIONS, NOW)
