"""Sliding windows against a brute-force computation, in order and out of order."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from services.risk.domain.windows import Series

WINDOWS = (600.0, 1800.0, 3600.0)
TOL = 900.0


def brute(points, latest, length, agg):
    inside = sorted((t, v) for t, v in points if latest - length < t <= latest)
    if not inside:
        return None
    vals = [v for _, v in inside]
    if agg == "sum":
        return sum(vals)
    if agg == "count":
        return float(len(vals))
    if agg == "avg":
        return sum(vals) / len(vals)
    if agg == "max":
        return max(vals)
    if agg == "min":
        return min(vals)
    dt = latest - inside[0][0]
    return None if dt <= 0 else (vals[-1] - vals[0]) / dt


# a stream of (time step, jitter back in time, value): mostly in order, some late
stream = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=400),
        st.one_of(st.just(0), st.integers(min_value=1, max_value=1200)),
        st.floats(min_value=-50, max_value=200, allow_nan=False).map(lambda x: round(x, 3)),
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(stream)
def test_every_window_aggregate_equals_brute_force(steps):
    s = Series(WINDOWS, tolerance=TOL)
    accepted: dict[float, float] = {}
    clock = 0.0
    for step, back, value in steps:
        clock += step
        ts = clock - back
        latest = s.latest
        ok = s.accept(ts, value)
        expect_ok = latest is None or ts > latest or ts >= latest - TOL
        assert ok == expect_ok
        if ok and ts not in accepted:
            accepted[ts] = value
        assert s.latest is not None
        for w in WINDOWS:
            for agg in ("sum", "count", "avg", "max", "min", "rate", "first"):
                if agg == "first":
                    continue
                got = s.window(w, agg)
                want = brute(accepted.items(), s.latest, w, agg)
                if want is None:
                    assert got is None
                else:
                    assert got is not None
                    assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-6), (w, agg)


@settings(max_examples=100, deadline=None)
@given(stream)
def test_a_checkpointed_series_continues_exactly_like_the_original(steps):
    s = Series(WINDOWS, tolerance=TOL)
    clock = 0.0
    half = len(steps) // 2
    for step, back, value in steps[:half]:
        clock += step
        s.accept(clock - back, value)
    restored = Series.load(s.dump(), WINDOWS, tolerance=TOL)
    for step, back, value in steps[half:]:
        clock += step
        assert s.accept(clock - back, value) == restored.accept(clock - back, value)
    for w in WINDOWS:
        for agg in ("sum", "count", "max", "min"):
            a, b = s.window(w, agg), restored.window(w, agg)
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def test_window_is_half_open_at_its_start():
    s = Series((3 * 3600.0,))
    for i in range(37):  # 00:00 … 03:00 in 5-minute increments of 1 mm
        s.accept(i * 300.0, 1.0)
    # ending 03:00, "3 h" is 00:05 … 03:00: 36 increments, not the one stamped 00:00
    assert s.window(3 * 3600.0, "sum") == 36.0


def test_readings_later_than_the_tolerance_are_refused():
    s = Series((3600.0,), tolerance=600.0)
    s.accept(10_000.0, 1.0)
    assert not s.accept(10_000.0 - 601, 5.0)
    assert s.accept(10_000.0 - 600, 5.0)
    assert s.window(3600.0, "sum") == 6.0


def test_the_list_is_trimmed_to_the_horizon():
    s = Series((3600.0,), tolerance=600.0)
    for i in range(10_000):
        s.accept(i * 60.0, 1.0)
    assert len(s.ts) <= 2 * 61
    assert s.window(3600.0, "count") == 60.0


def test_days_running_min_needs_every_day():
    day = 86400.0
    s = Series((), daily_days=3)
    base = 16 * 3600.0  # 00:00 Beijing time
    for d, peak in enumerate([36.0, 35.5, 35.0]):
        s.accept(base + d * day + 6 * 3600, 30.0)
        s.accept(base + d * day + 14 * 3600, peak)
    assert s.days_running_min(3) == 35.0
    s.accept(base + 4 * day + 14 * 3600, 40.0)  # a day with no data in between
    assert s.days_running_min(3) is None


def test_sums_are_exact_in_millionths_and_never_drift():
    s = Series((3 * 3600.0,))
    for k in range(500):
        s.accept(10.0 * k, 0.1)
    assert s.window(3 * 3600.0, "sum") == 50.0  # a float running sum: 49.99999999999929
    # a year of points passing through the window leaves no residue
    for k in range(500, 500 + 60_000):
        s.accept(10.0 * k, 0.7 if k % 3 else 0.3)
    for k in range(60_500, 60_500 + 1081):
        s.accept(10.0 * k, 0.0)
    assert s.window(3 * 3600.0, "sum") == 0.0
    assert s.window(3 * 3600.0, "avg") == 0.0


def test_a_series_read_only_for_its_latest_value_keeps_one_point():
    """The station state is saved with every batch: without windows it must not grow with the
    reading rate. With windows, the points of the longest window (or the tolerance) stay."""
    bare = Series((), tolerance=3600.0)
    windowed = Series((600.0,), tolerance=3600.0)
    for i in range(5000):  # one point a second for 83 minutes
        bare.accept(float(i), float(i % 7))
        windowed.accept(float(i), float(i % 7))
    assert len(bare.ts) <= 2
    assert bare.ts[-1] == 4999.0
    assert bare.vals[-1] == 4999 % 7
    assert 3600 <= len(windowed.ts) <= 2 * 3601
    # a late point within the tolerance is still accepted (it changes no window), one past it not
    assert bare.accept(4000.0, 1.0)
    assert not bare.accept(1000.0, 1.0)
    assert bare.ts[-1] == 4999.0
