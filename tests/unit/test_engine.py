"""Threshold rules from station attributes: boundaries exactly at, just under and just over each
value; restore paths; late, repeated and bad readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.risk.domain.engine import (
    NoUpstream,
    ReadingIn,
    StationPlan,
    StationState,
    evaluate,
    history_horizon,
    level_diff,
    replay,
)
from services.risk.domain.packs import rules_for_station, shipped_packs
from services.risk.domain.rules import RuleConfigError
from services.risk.domain.thresholds import threshold_rules_from_attributes
from shared.contracts import Level

T0 = datetime(2026, 7, 1, tzinfo=UTC)
SPEC = {"blue": 3.0, "yellow": 3.5, "orange": 4.0, "red": 4.5, "restore": {"red": 4.3, "blue": 2.8}}


def rule(spec=SPEC, metric="water_level"):
    (r,) = threshold_rules_from_attributes({"thresholds": {metric: spec}})
    return r


def level_of(state, r):
    rs = state.rules.get(r.rule_id)
    return rs.level if rs else Level.none


def run(values, r=None, metric="water_level"):
    r = r or rule()
    plan = StationPlan.build([r])
    state = StationState("S1", "110101001001")
    levels, events = [], []
    for i, v in enumerate(values):
        reading = ReadingIn("S1", "110101001001", metric, T0 + timedelta(minutes=5 * i), v)
        state, evs = evaluate(plan, state, reading, T0)
        levels.append(level_of(state, r))
        events.extend(evs)
    return levels, events


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2.99, Level.none),
        (3.0, Level.blue),
        (3.01, Level.blue),
        (3.49, Level.blue),
        (3.5, Level.yellow),
        (3.99, Level.yellow),
        (4.0, Level.orange),
        (4.49, Level.orange),
        (4.5, Level.red),
        (9.0, Level.red),
    ],
)
def test_level_at_boundaries(value, expected):
    levels, _ = run([value])
    assert levels == [expected]


def test_most_severe_level_wins_and_one_event_per_change():
    levels, events = run([1.0, 4.7, 4.8])
    assert levels == [Level.none, Level.red, Level.red]
    assert len(events) == 1
    assert (events[0].previous, events[0].level, events[0].change) == (
        Level.none,
        Level.red,
        "raised",
    )


def test_red_holds_until_its_restore_value_then_falls_to_the_level_the_value_is_at():
    levels, events = run([4.6, 4.4, 4.31, 4.3, 4.29])
    # 4.4 and 4.31 and 4.3 are below the red trigger but not below the restore value 4.3
    assert levels == [Level.red, Level.red, Level.red, Level.red, Level.orange]
    assert [e.change for e in events] == ["raised", "lowered"]


def test_blue_clears_only_below_its_restore_value():
    levels, events = run([3.2, 2.95, 2.8, 2.79])
    assert levels == [Level.blue, Level.blue, Level.blue, Level.none]
    assert events[-1].change == "cleared"


def test_level_without_restore_clears_below_its_trigger():
    levels, _ = run([3.6, 3.49])
    assert levels == [Level.yellow, Level.blue]


def test_late_and_repeated_readings_do_not_move_the_level():
    r = rule()
    plan = StationPlan.build([r])
    state = StationState("S1", "110101001001")
    state, _ = evaluate(plan, state, ReadingIn("S1", "110101001001", "water_level", T0, 4.6), T0)
    before = state.dump()
    late = ReadingIn("S1", "110101001001", "water_level", T0 - timedelta(minutes=5), 1.0)
    state, evs = evaluate(plan, state, late, T0)
    assert level_of(state, r) == Level.red
    assert evs == []
    state, evs = evaluate(plan, state, ReadingIn("S1", "110101001001", "water_level", T0, 1.0), T0)
    assert evs == []
    assert state.dump()["rules"] == before["rules"]


def test_bad_quality_readings_are_ignored():
    r = rule()
    plan = StationPlan.build([r])
    bad = ReadingIn("S1", "110101001001", "water_level", T0, 9.0, quality="bad")
    state, evs = evaluate(plan, StationState("S1", "110101001001"), bad, T0)
    assert level_of(state, r) == Level.none
    assert evs == []


def test_below_direction():
    r = rule({"blue": 20.0, "red": 10.0, "direction": "below"}, metric="tank_level")
    levels, _ = run([25, 20, 15, 10, 21], r=r, metric="tank_level")
    assert levels == [Level.none, Level.blue, Level.blue, Level.red, Level.none]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"blue": 4.0, "yellow": 3.0}, "less severe"),
        ({"direction": "sideways", "blue": 1}, "direction"),
        ({}, "names no level"),
        ({"blue": 3.0, "restore": {"red": 1.0}}, "no trigger"),
        ({"blue": 3.0, "restore": {"blue": 3.5}}, "past the trigger"),
    ],
)
def test_invalid_threshold_specs_are_refused(spec, message):
    with pytest.raises(RuleConfigError, match=message):
        threshold_rules_from_attributes({"thresholds": {"water_level": spec}})


def test_hazard_defaults_from_the_metric_and_source_is_kept():
    r = rule({"red": 1.0, "source": "GB/T 50493-2019 §5.5.3"}, metric="combustible_gas")
    assert r.hazard == "hazardous_chemicals"
    ((_lvl, crit),) = list(r.criteria())
    assert crit.source is not None
    assert crit.source.cite() == "GB/T 50493-2019 §5.5.3"


def test_rebuild_horizon_covers_the_longest_window_the_days_and_the_tolerance():
    packs = list(shipped_packs().values())
    gauge = StationPlan.build(rules_for_station(packs, "rain_gauge", {}).rules, tolerance_s=600)
    assert history_horizon(gauge) == 12 * 3600 + 600  # the blue rainstorm window
    weather = StationPlan.build(rules_for_station(packs, "weather_station", {}).rules)
    assert history_horizon(weather) == 4 * 86400 + 3600  # heat: 3 days running + today


def test_replay_then_level_diff_announces_only_what_differs_from_the_published_levels():
    r = rule()
    plan = StationPlan.build([r])
    st = StationState("S1", "110101001001")
    n = replay(
        plan, st, [("water_level", 100.0 + i, v) for i, v in enumerate([1, 5, 3])], NoUpstream()
    )
    assert n == 3
    now_level = st.rules[r.rule_id].level
    assert now_level > Level.none
    assert level_diff(plan, st, {r.rule_id: now_level}, 200.0) == []
    (change,) = level_diff(plan, st, {r.rule_id: Level.red}, 200.0)
    assert (change.previous, change.level, change.at) == (Level.red, now_level, 200.0)
    assert change.evidence["rebuilt"] is True
    assert change.evidence["criteria"]  # the evidence of the level it holds
