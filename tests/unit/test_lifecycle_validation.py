from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.alerting.domain.lifecycle import (
    ExpiryPolicy,
    apply_station_level,
    by_station,
    expiry_action,
    group_region,
    identifier,
)
from services.ingest.domain.kernel import check_reading, history_checks
from services.ingest.domain.validation import (
    Normalised,
    Rejection,
    StationInfo,
    judged_on_history,
)
from shared.contracts import Level, RawReading

NOW = datetime(2026, 7, 1, tzinfo=UTC)


def test_first_station_issues_then_updates_then_cancels():
    d = apply_station_level(None, {}, "A", Level.yellow)
    assert (d.action, d.level) == ("issue", Level.yellow)
    d = apply_station_level(Level.yellow, d.stations, "B", Level.red)
    assert (d.action, d.level) == ("update", Level.red)
    d = apply_station_level(Level.red, d.stations, "A", Level.blue)
    assert d.action == "none"  # B still holds the group at red
    d = apply_station_level(Level.red, d.stations, "B", Level.none)
    assert (d.action, d.level) == ("update", Level.blue)
    d = apply_station_level(Level.blue, d.stations, "A", Level.none)
    assert d.action == "cancel"
    assert dict(d.stations) == {}


EXPIRY = ExpiryPolicy(
    validity=timedelta(hours=24),
    renew_ahead=timedelta(minutes=30),
    evidence_timeout=timedelta(minutes=45),
)
NOON = datetime(2026, 7, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expires_in_min", "evidence_ago_min", "heard_ago_min", "action"),
    [
        (31, 1, 1, "wait"),  # not yet within renew_ahead
        (29, 1, 1, "renew"),  # backed: renewed before it runs out
        (29, 50, 1, "wait"),  # no longer backed, but its time has not run out
        (0, 50, 1, "expire"),  # …and now it has
        (-10, None, 1, "expire"),  # no station ever stated (evidence lost)
        (0, 50, 46, "hold"),  # risk silent for longer than the timeout: no decision
        (0, 50, None, "hold"),  # risk never heard
        (0, 80, 40, "renew"),  # the backlog of a lagging consumer: judged on risk's clock
        (0, 86, 40, "expire"),  # …where 46 minutes without the station is too long
    ],
)
def test_expiry_action(expires_in_min, evidence_ago_min, heard_ago_min, action):
    def ago(m: int | None) -> datetime | None:
        return None if m is None else NOON - timedelta(minutes=m)

    assert (
        expiry_action(
            expires_at=NOON + timedelta(minutes=expires_in_min),
            evidence_at=ago(evidence_ago_min),
            risk_heard_at=ago(heard_ago_min),
            now=NOON,
            policy=EXPIRY,
        )
        == action
    )


def test_a_station_stands_at_the_highest_of_its_rules():
    levels = {("RG1", "observed"): Level.orange}
    d = apply_station_level(Level.orange, levels, ("RG1", "forecast"), Level.yellow)
    assert d.action == "none"
    assert by_station(d.stations) == {"RG1": Level.orange}
    d = apply_station_level(Level.orange, d.stations, ("RG1", "observed"), Level.none)
    assert (d.action, d.level) == ("update", Level.yellow)
    assert by_station(d.stations) == {"RG1": Level.yellow}
    d = apply_station_level(Level.yellow, d.stations, ("RG1", "forecast"), Level.none)
    assert d.action == "cancel"
    assert by_station(d.stations) == {}


def test_a_clear_without_an_open_warning_does_nothing():
    assert apply_station_level(None, {}, "A", Level.none).action == "none"


def test_group_region_pads_to_12_digits():
    assert group_region("110101001002", "township") == "110101001000"
    assert group_region("110101001002", "county") == "110101000000"
    assert group_region("110101001002", "village") == "110101001002"


def test_identifier_uses_beijing_time():
    assert identifier("110101000000", datetime(2026, 7, 1, 0, 0, 5, tzinfo=UTC), 7) == (
        "110101000000_20260701080005_7"
    )


STATION = StationInfo(id="W1", kind="water_level", region_code="110101001001")


def raw(metric="water_level", value=350.0, unit="cm", ts=NOW):
    return RawReading(source="s", station_id="W1", metric=metric, ts=ts, value=value, unit=unit)


def test_units_are_normalised():
    r = check_reading(raw(value=350, unit="cm"), STATION, NOW)
    assert isinstance(r, Normalised)
    assert (r.value, r.unit, r.quality) == (3.5, "m", "good")
    r = check_reading(raw(metric="temperature", value=300.15, unit="K"), STATION, NOW)
    assert isinstance(r, Normalised)
    assert r.value == pytest.approx(27.0)


def test_unknown_unit_and_hard_range_are_rejected_with_a_reason():
    r = check_reading(raw(unit="furlong"), STATION, NOW)
    assert isinstance(r, Rejection)
    assert r.reason == "bad_unit"
    r = check_reading(raw(metric="rainfall", value=900, unit="mm"), STATION, NOW)
    assert isinstance(r, Rejection)
    assert r.reason == "out_of_hard_range"


def test_soft_range_and_future_timestamps_are_flagged_doubtful():
    r = check_reading(raw(metric="rainfall", value=250, unit="mm"), STATION, NOW)
    assert isinstance(r, Normalised)
    assert r.quality == "doubtful"
    assert "soft_range" in r.checks
    r = check_reading(raw(ts=NOW + timedelta(minutes=6)), STATION, NOW)
    assert isinstance(r, Normalised)
    assert r.checks == ("future_timestamp",)
    r = check_reading(raw(ts=NOW + timedelta(minutes=4)), STATION, NOW)
    assert isinstance(r, Normalised)
    assert r.quality == "good"


def test_station_attributes_narrow_the_hard_range():
    st = StationInfo(
        id="W1",
        kind="water_level",
        region_code="110101001001",
        attributes={"hard_range": {"water_level": [0, 10]}},
    )
    r = check_reading(raw(value=1200, unit="cm"), st, NOW)
    assert isinstance(r, Rejection)


T = datetime(2026, 7, 1, tzinfo=UTC)
WL = StationInfo("WL1", "water_level", "110101001001")


def recent(values, step_min=5):
    return [(T + timedelta(minutes=step_min * i), v) for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("last", "value", "minutes", "spike"),
    [
        (2.0, 2.25, 5, False),  # exactly 3 m/h
        (2.0, 2.2501, 5, True),  # just over
        (2.0, 1.7499, 5, True),  # falling counts too
        (2.0, 3.0, 60, False),  # 1 m in an hour
    ],
)
def test_a_change_faster_than_the_metric_allows_is_a_spike(last, value, minutes, spike):
    hist = [(T, last)]
    got = history_checks(WL, "water_level", T + timedelta(minutes=minutes), value, hist)
    assert ("spike" in got) is spike


def test_stuck_needs_the_full_run_and_stations_may_set_their_own_limits():
    same = recent([1.5] * 23)
    later = same[-1][0] + timedelta(minutes=5)
    assert history_checks(WL, "water_level", later, 1.5, same) == ("stuck",)  # the 24th
    assert history_checks(WL, "water_level", later, 1.5, same[1:]) == ()  # only the 23rd
    own = StationInfo(
        "WL2", "water_level", "110101001001", attributes={"stuck_count": {"water_level": 3}}
    )
    assert history_checks(own, "water_level", later, 1.5, recent([1.4, 1.5, 1.5])) == ("stuck",)
    assert not judged_on_history(WL, "rainfall")  # a downpour may rise as fast as it likes
    assert judged_on_history(
        StationInfo(
            "R", "rain_gauge", "110101001001", attributes={"max_rate_per_h": {"rainfall": 300}}
        ),
        "rainfall",
    )


def test_late_readings_are_not_judged_on_history():
    hist = recent([2.0, 2.0])
    assert history_checks(WL, "water_level", hist[0][0], 9.0, hist) == ()
