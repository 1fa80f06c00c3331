"""The ingest consumer's per-batch kernel: the compiled encoders are held to their Python twins
(the same COPY bytes, the same events), and both to the contracts they serve (hashlib's BLAKE2b,
``stable_id``, the ``Reading`` model); the compiled checks, the only ones, to a plain model of
them (``tests/checks_oracle.py``) and to examples."""

from __future__ import annotations

import gc
import hashlib
import math
import os
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.domain import kernel
from services.ingest.domain.kernel import PYTHON, Kernel, published, reading_event_id
from services.ingest.domain.rows import Row
from services.ingest.domain.validation import StationInfo, summary
from shared.contracts import RawReadingRecord, Reading, stable_id
from tests import checks_oracle as oracle

NATIVE = kernel.default()
NOW = datetime(2026, 7, 1, 8, 0, 0, 250_000, tzinfo=UTC)
STATIONS = {
    s: StationInfo(s, "water_level", "110101001001") for s in ("A1", "B-2", "站点3", "C.4:x")
}


def native() -> Kernel:
    return NATIVE


def test_the_compiled_kernel_is_built_and_chosen_by_default():
    assert native().name == "native"
    assert kernel.default().name == "native"
    assert kernel.default(use_native=False).name == "python"
    assert kernel.default(use_native=False).copy_rows([]) == PYTHON.copy_rows([])


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


# -- planning and checking a batch ------------------------------------------------------------

LATEST = datetime(2026, 7, 1, 8, 5, tzinfo=UTC)
T = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
METRICS = ["water_level", "temperature", "rainfall", "fire_danger", "tank_pressure", "odd_metric"]
CHECK_STATIONS = {
    "P": StationInfo("P", "water_level", "110101001001"),
    "M": StationInfo("M", "water_level", "110101001001", maintenance=True),
    "Q": StationInfo(
        "Q",
        "weather",
        "110101001001",
        attributes={
            "hard_range": {"water_level": [0, 10], "odd_metric": [-1, 1]},
            "soft_range": {"water_level": [1, 5]},
            "max_rate_per_h": {"temperature": 2},
            "stuck_count": {"water_level": 3, "rainfall": 2},
        },
    ),
}
offsets_min = st.sampled_from([0, 480, -330])
readings = st.builds(
    lambda sid, metric, minutes, tz, value, unit, kind, src: RawReadingRecord(
        source=src,
        station_id=sid,
        metric=metric,
        ts=(T + timedelta(minutes=minutes)).astimezone(timezone(timedelta(minutes=tz))),
        value=value,
        unit=unit,
        kind=kind,
        issued_at=T if kind == "forecast" else None,
    ),
    st.sampled_from([*CHECK_STATIONS, "unknown"]),
    st.sampled_from(METRICS),
    st.integers(-30, 30),
    offsets_min,
    st.sampled_from([0.0, 1.0, 2.5, 3.0, 250.0, -1.0, 12.0, 1e6]) | st.floats(-100, 100),
    st.sampled_from([None, "m", "cm", " CM ", "mm", "degF", "K", "kPa", "", "furlong", "%"]),
    st.sampled_from(["observation", "observation", "forecast"]),
    st.sampled_from(["a", "b"]),
)


def summaries_for(keys, data):
    """Histories of the judged keys, summarised: empty, flat (stuck, or about to be), rising,
    or newer than the batch."""
    out = {}
    for k in sorted(keys):
        shape = data.draw(st.sampled_from(["absent", "empty", "flat", "rising", "future"]))
        if shape == "absent":
            continue
        d = []
        for j in range({"empty": 0, "flat": 5, "rising": 5, "future": 2}[shape]):
            ts = T - timedelta(minutes=5 * (5 - j)) if shape != "future" else T + timedelta(hours=j)
            d.append((ts, 3.0 if shape == "flat" else float(j)))
        out[k] = summary(d, data.draw(st.sampled_from([1, 2, 5, 48])))
    return out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(readings, max_size=40), st.data())
def test_the_kernel_plans_and_judges_a_batch_as_the_model_does(recs, data):
    from services.ingest.domain.validation import PlanCache

    topics = [data.draw(st.sampled_from(["obs.sensor.v1", "obs.hydro.v1"])) for _ in recs]
    got_plan = native().plan_batch(topics, recs, CHECK_STATIONS, PlanCache())
    want_plan = oracle.plan_batch(topics, recs, CHECK_STATIONS, PlanCache())
    assert got_plan == want_plan
    recent = summaries_for(want_plan.judged, data)
    got_recent, want_recent = dict(recent), dict(recent)
    keep = data.draw(st.sampled_from([1, 2, 3, 6, 48]))
    got = native().check_batch(recs, got_plan.plans, LATEST, got_recent, keep, {})
    want = oracle.check_batch(recs, want_plan.plans, LATEST, want_recent, keep, {})
    assert got == want
    assert [type(r) for r in got.rows] == [Row] * len(want.rows)
    assert [type(r.value) for r in got.rows] == [type(r.value) for r in want.rows]
    assert got_recent == want_recent  # the good observations joined their history alike
    assert all(v == recent[k] or 1 <= v[2] <= keep for k, v in got_recent.items())


def test_the_checks_flag_what_they_should():
    """Not only alike: right. Stuck after a flat history, a spike, a soft range, a future
    timestamp, maintenance, and the refusals, from the compiled kernel."""
    from services.ingest.domain.validation import PlanCache

    def rec(sid, metric, minutes, value, unit=None, kind="observation"):
        return RawReadingRecord(
            source="s",
            station_id=sid,
            metric=metric,
            ts=T + timedelta(minutes=minutes),
            value=value,
            unit=unit,
            kind=kind,
        )

    recs = [
        rec("Q", "water_level", 0, 3.0),  # stuck: two 3.0 before it
        rec("Q", "temperature", 0, 20.0),  # spike: +10 °C in 5 min, limit 2/h
        rec("Q", "water_level", 1, 6.0),  # outside the soft range 1–5, and 3 m in 6 min
        rec("P", "water_level", 10, 300.0, "cm"),  # future (latest is 08:05), 3 m
        rec("M", "rainfall", 0, 1.0),  # maintenance
        rec("Q", "water_level", 2, 11.0),  # outside the hard range 0–10
        rec("P", "water_level", 0, 1.0, "furlong"),  # bad unit
        rec("P", "odd_metric", 0, 1.0),  # unknown metric with no unit
        rec("nowhere", "rainfall", 0, 1.0),
        rec("P", "water_level", 3, 2.0, kind="forecast"),
    ]
    planned = native().plan_batch(["t"] * len(recs), recs, CHECK_STATIONS, PlanCache())
    assert planned.judged == {("Q", "water_level"), ("Q", "temperature"), ("P", "water_level")}
    assert planned.sources == {("s", "t"): 10}
    recent = {
        ("Q", "water_level"): (T - timedelta(minutes=5), 3.0, 2),  # two 3.0 in a row
        ("Q", "temperature"): (T - timedelta(minutes=5), 10.0, 1),
        ("P", "water_level"): (T - timedelta(minutes=5), 2.5, 1),
    }
    before = dict(recent)
    earlier = T - timedelta(days=1)
    seen = {"Q": T + timedelta(hours=1), "Z": earlier}  # from an earlier chunk
    got = native().check_batch(recs, planned.plans, LATEST, recent, 24, seen)
    flags = [(r.station_id, r.metric, r.value, r.unit, r.quality, r.checks) for r in got.rows]
    assert flags == [
        ("Q", "water_level", 3.0, "m", "doubtful", ("stuck",)),
        ("Q", "temperature", 20.0, "degC", "doubtful", ("spike",)),
        ("Q", "water_level", 6.0, "m", "doubtful", ("soft_range", "spike")),
        ("P", "water_level", 3.0, "m", "doubtful", ("future_timestamp",)),
        ("M", "rainfall", 1.0, "mm", "good", ("maintenance",)),
    ]
    assert got.rejected == [
        (5, "out_of_hard_range", 11.0),
        (6, "bad_unit", None),
        (7, "missing_unit", None),
        (8, "unknown_station", None),
    ]
    # rows hold no containers but their checks: the collector is spared walking them
    assert not any(map(gc.is_tracked, got.rows))
    events = native().reading_events(got.rows, CHECK_STATIONS, NOW)
    assert not any(map(gc.is_tracked, events))
    assert [(i, r.quality) for i, r in got.forecasts] == [(9, "good")]
    assert got.seen is seen
    assert seen == {
        "Q": T + timedelta(hours=1),
        "Z": earlier,
        "P": T + timedelta(minutes=10),
        "M": T,
    }
    # doubtful readings do not join the history, and forecasts neither judge nor join it
    assert recent[("Q", "water_level")] == before[("Q", "water_level")]
    assert recent[("P", "water_level")] == before[("P", "water_level")]
    again = {"Q": T + timedelta(hours=1), "Z": earlier}
    assert got == oracle.check_batch(recs, planned.plans, LATEST, before, 24, again)


def test_a_good_observation_becomes_the_last_and_counts_its_run_up_to_keep():
    from services.ingest.domain.validation import PlanCache

    def rec(minutes, value):
        return RawReadingRecord(
            source="s",
            station_id="P",
            metric="water_level",
            ts=T + timedelta(minutes=minutes),
            value=value,
        )

    start = (T - timedelta(minutes=60), 2.1, 1)
    for k in (native(),):
        recent = {("P", "water_level"): start}
        states = []
        for minutes, value in [
            (-40, 2.2),
            (-30, 2.2),
            (-20, 2.2),
            (-10, 2.2),
            (0, 2.3),
            (-50, 2.3),
        ]:
            planned = k.plan_batch(["t"], [rec(minutes, value)], CHECK_STATIONS, PlanCache())
            got = k.check_batch([rec(minutes, value)], planned.plans, LATEST, recent, 3, {})
            assert [r.quality for r in got.rows] == ["good"]
            states.append(recent[("P", "water_level")])
        assert [(s[1], s[2]) for s in states] == [
            (2.2, 1),  # a new value starts a run
            (2.2, 2),
            (2.2, 3),
            (2.2, 3),  # counted up to keep
            (2.3, 1),
            (2.3, 1),  # a late reading is not judged and does not join
        ]
        assert states[-1][0] == T
        assert start == (T - timedelta(minutes=60), 2.1, 1)  # replaced, not changed


def test_a_summary_is_the_last_reading_and_its_run():
    assert summary([], 48) == ()
    a, b, c = (T + timedelta(minutes=m) for m in (0, 5, 10))
    assert summary([(a, 1.0), (b, 2.0), (c, 2.0)], 48) == (c, 2.0, 2)
    assert summary([(a, 2.0), (b, 2.0), (c, 2.0)], 2) == (c, 2.0, 2)
    assert summary([(a, 2.0), (b, 2.0), (c, 1.0)], 48) == (c, 1.0, 1)


def test_a_stuck_check_longer_than_the_loaded_history_counts_on_from_it():
    """A station's own stuck_count may exceed the readings loaded per key on a cold start
    (HISTORY): the run loaded from them is counted on, and the 60th equal reading is stuck."""
    from services.ingest.adapters.recent import RUN_CAP
    from services.ingest.domain.validation import HISTORY, PlanCache

    slow = StationInfo(
        "S", "water_level", "110101001001", attributes={"stuck_count": {"water_level": 60}}
    )
    start = T - timedelta(hours=10)
    loaded = [(start + timedelta(minutes=5 * j), 1.5) for j in range(HISTORY)]
    recs = [
        RawReadingRecord(
            source="s",
            station_id="S",
            metric="water_level",
            ts=T - timedelta(minutes=60 - 5 * i),
            value=1.5,
        )
        for i in range(12)
    ]
    for k in (native(),):
        recent = {("S", "water_level"): summary(loaded, HISTORY)}
        assert recent[("S", "water_level")][2] == HISTORY == 48
        planned = k.plan_batch(["t"] * len(recs), recs, {"S": slow}, PlanCache())
        got = k.check_batch(recs, planned.plans, LATEST, recent, RUN_CAP, {})
        # 48 loaded + 11 good = 59 before the 12th: it is the 60th equal reading
        assert [r.checks for r in got.rows] == [()] * 11 + [("stuck",)]
        assert recent[("S", "water_level")][2] == 59
