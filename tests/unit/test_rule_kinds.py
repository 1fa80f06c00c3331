"""Rule kinds: accumulation, sustained duration, rate of change, compound with upstream warnings,
forecasts, no-data, checkpoints and the region roll-up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.risk.domain.engine import ReadingIn, StationPlan, StationState, evaluate, reassess
from services.risk.domain.regions import region_of, rollup
from services.risk.domain.rules import RuleConfigError, parse_rule
from services.risk.domain.silence import assess_silence
from shared.contracts import Level

T0 = datetime(2026, 7, 1, tzinfo=UTC)
REGION = "110101001001"


class Upstream:
    def __init__(self, levels=None):
        self.levels = dict(levels or {})

    def upstream_level(self, hazard, region_prefix):
        return self.levels.get((hazard, region_prefix), Level.none)


def feed(plan, state, metric, values, *, step_min=5, start=T0, ctx=None, **kw):
    events = []
    for i, v in enumerate(values):
        r = ReadingIn("S1", REGION, metric, start + timedelta(minutes=step_min * i), v, **kw)
        state, evs = evaluate(plan, state, r, T0, ctx)
        events.extend(evs)
    return state, events


def test_sustained_duration_raises_only_after_the_condition_held_long_enough():
    r = parse_rule(
        {
            "id": "gas",
            "hazard": "hazardous_chemicals",
            "signal": {"metric": "combustible_gas"},
            "levels": {"orange": {"when": {"value": 25}, "sustain": "10min"}},
        }
    )
    plan = StationPlan.build([r])
    st = StationState("S1", REGION)
    # above at 0, 5 min; dips at 10 (resets); above 15, 20, 25 → held 10 min at 25
    st, evs = feed(plan, st, "combustible_gas", [30, 30, 10, 30, 30, 30])
    assert [(e.level, e.event_time) for e in evs] == [(Level.orange, T0 + timedelta(minutes=25))]
    assert evs[0].evidence["sustain_s"] == 600.0


def test_rate_of_change_per_day():
    r = parse_rule(
        {
            "id": "disp",
            "hazard": "geohazard",
            "signal": {"metric": "displacement", "agg": "rate", "window": "24h", "per": "1d"},
            "levels": {"blue": 5, "red": 20},
        }
    )
    plan = StationPlan.build([r])
    st = StationState("S1", REGION)
    # one reading an hour; 0.25 mm/h = 6 mm/day
    st, evs = feed(plan, st, "displacement", [100 + 0.25 * i for i in range(25)], step_min=60)
    assert [e.level for e in evs] == [Level.blue]
    assert evs[0].evidence["value"] == pytest.approx(6.0)
    # 2 mm/h for the next hours: the 24 h rate passes 20 mm/day once enough accumulates
    last = 100 + 0.25 * 24
    st, evs = feed(
        plan,
        st,
        "displacement",
        [last + 2 * (i + 1) for i in range(12)],
        step_min=60,
        start=T0 + timedelta(hours=25),
    )
    assert [e.level for e in evs] == [Level.red]


GEO = [
    {
        "id": "geo.rain",
        "hazard": "geohazard",
        "signal": {"metric": "rainfall", "agg": "sum", "window": "24h"},
        "levels": {"blue": 60, "yellow": 120},
    },
    {
        "id": "geo.raise",
        "hazard": "geohazard",
        "raise_by": 1,
        "when": {
            "all": [
                {"upstream": {"hazard": "rainstorm", "min_level": "red", "scope": "township"}},
                {"signal": {"metric": "rainfall", "agg": "sum", "window": "3h"}, "value": 100},
            ]
        },
    },
]


def test_compound_rainstorm_red_and_local_rain_raise_the_site_one_level():
    rules = [parse_rule(x) for x in GEO]
    plan = StationPlan.build(rules)
    ctx = Upstream({("rainstorm", REGION[:9]): Level.red})
    st = StationState("S1", REGION)
    # 36 × 3 mm in 3 h = 108 mm: geo.rain reaches blue at 60 mm; the raise adds one → yellow
    st, evs = feed(plan, st, "rainfall", [3.0] * 36, ctx=ctx)
    assert st.hazard_level("geohazard", plan) == Level.yellow
    assert ("geo.raise", Level.yellow) in [(e.rule.rule_id, e.level) for e in evs]
    raise_ev = next(e for e in evs if e.rule.rule_id == "geo.raise")
    assert {"upstream": "rainstorm", "min_level": "red", "scope": "township"} in raise_ev.evidence[
        "criteria"
    ]


def test_compound_without_the_upstream_warning_does_not_raise_and_lifts_when_it_ends():
    rules = [parse_rule(x) for x in GEO]
    plan = StationPlan.build(rules)
    st = StationState("S1", REGION)
    st, _ = feed(plan, st, "rainfall", [3.0] * 36, ctx=Upstream())
    assert st.hazard_level("geohazard", plan) == Level.blue
    ctx = Upstream({("rainstorm", REGION[:9]): Level.red})
    at = st.last_seen
    evs = reassess(plan, st, at, ctx)
    assert [(e.rule.rule_id, e.level) for e in evs] == [("geo.raise", Level.yellow)]
    evs = reassess(plan, st, at, Upstream())
    assert [(e.rule.rule_id, e.level) for e in evs] == [("geo.raise", Level.none)]


def test_an_upstream_warning_for_another_township_does_not_count():
    plan = StationPlan.build([parse_rule(x) for x in GEO])
    ctx = Upstream({("rainstorm", "110101002"): Level.red})
    st, _ = feed(plan, StationState("S1", REGION), "rainfall", [3.0] * 36, ctx=ctx)
    assert st.hazard_level("geohazard", plan) == Level.blue


FORECAST = {
    "id": "rain.fc",
    "hazard": "rainstorm",
    "levels": {
        "orange": {
            "signal": {"metric": "rainfall", "agg": "sum", "window": "3h", "kind": "forecast"},
            "value": 50,
        }
    },
}


def test_forecast_rules_judge_the_newest_run_and_are_expected():
    r = parse_rule(FORECAST)
    assert r.expected
    plan = StationPlan.build([r])
    st = StationState("S1", REGION)
    issued = T0
    # hourly forecast: 10, 20, 25 mm → 55 mm in 3 h
    evs = []
    for h, v in enumerate([10.0, 20.0, 25.0]):
        reading = ReadingIn(
            "S1",
            REGION,
            "rainfall",
            issued + timedelta(hours=h + 1),
            v,
            kind="forecast",
            issued_at=issued,
        )
        st, e = evaluate(plan, st, reading, T0)
        evs += e
    assert [e.level for e in evs] == [Level.orange]
    # a newer run forecasting less replaces it; an older run arriving late is ignored
    newer = T0 + timedelta(hours=1)
    st, evs = evaluate(
        plan,
        st,
        ReadingIn(
            "S1",
            REGION,
            "rainfall",
            newer + timedelta(hours=1),
            5.0,
            kind="forecast",
            issued_at=newer,
        ),
        T0,
    )
    assert [e.level for e in evs] == [Level.none]
    st, evs = evaluate(
        plan,
        st,
        ReadingIn(
            "S1", REGION, "rainfall", T0 + timedelta(hours=2), 99.0, kind="forecast", issued_at=T0
        ),
        T0,
    )
    assert evs == []


def test_observations_do_not_feed_forecast_rules():
    plan = StationPlan.build([parse_rule(FORECAST)])
    _, evs = feed(plan, StationState("S1", REGION), "rainfall", [30.0] * 6)
    assert evs == []


def test_a_checkpoint_restores_the_same_future():
    rules = [parse_rule(x) for x in GEO]
    plan = StationPlan.build(rules)
    ctx = Upstream({("rainstorm", REGION[:9]): Level.red})
    values = [0.0, 4.0, 6.0, 1.0] * 20
    a = StationState("S1", REGION)
    a, ev_a1 = feed(plan, a, "rainfall", values[:40], ctx=ctx)
    b = StationState.load("S1", a.dump(), plan)
    start = T0 + timedelta(minutes=5 * 40)
    a, ev_a2 = feed(plan, a, "rainfall", values[40:], ctx=ctx, start=start)
    b, ev_b2 = feed(plan, b, "rainfall", values[40:], ctx=ctx, start=start)
    assert [(e.rule.rule_id, e.level, e.at) for e in ev_a2] == [
        (e.rule.rule_id, e.level, e.at) for e in ev_b2
    ]
    assert a.dump() == b.dump()
    assert ev_a1  # the first half did raise something


def test_missing_data_never_restores_a_level():
    r = parse_rule(
        {
            "id": "wind",
            "hazard": "gale",
            "levels": {
                "blue": {
                    "signal": {"metric": "wind_speed", "agg": "max", "window": "1h"},
                    "value": 10.8,
                }
            },
        }
    )
    plan = StationPlan.build([r])
    st, evs = feed(plan, StationState("S1", REGION), "wind_speed", [12.0])
    assert [e.level for e in evs] == [Level.blue]
    # another metric arrives (the wind sensor is silent): the level holds
    st, evs = feed(plan, st, "temperature", [20.0], start=T0 + timedelta(hours=5))
    assert evs == []
    assert st.rules["wind"].level == Level.blue


def test_silence_is_judged_against_k_times_the_interval():
    assert assess_silence(None, 300, 3, False, 10_000) is None
    assert assess_silence(1000, 300, 3, False, 1000 + 900) is None
    assert assess_silence(1000, 300, 3, False, 1000 + 901) is True
    assert assess_silence(1000, 300, 3, True, 1000 + 901) is None
    assert assess_silence(2000, 300, 3, True, 2100) is False


def test_rollup_to_township_and_county_with_counts():
    stations = [
        ("110101001001", "flood", Level.blue),
        ("110101001002", "flood", Level.red),
        ("110101002001", "flood", Level.none),
        ("110101001001", "rainstorm", Level.yellow),
    ]
    town = rollup(stations, "township")
    assert town[("110101001000", "flood")].level == Level.red
    assert town[("110101001000", "flood")].counts["blue"] == 1
    assert town[("110101002000", "flood")].level == Level.none
    county = rollup(stations, "county")
    assert county[("110101000000", "flood")].counts == {
        "none": 1,
        "blue": 1,
        "yellow": 0,
        "orange": 0,
        "red": 1,
    }
    assert region_of("110101001002", "village") == "110101001002"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"id": "x", "hazard": "h", "levels": {}}, "at least one level"),
        ({"id": "x y", "hazard": "h", "levels": {"blue": 1}}, "letters"),
        ({"id": "x", "hazard": "h", "levels": {"purple": 1}, "signal": {"metric": "a"}}, "level"),
        (
            {
                "id": "x",
                "hazard": "h",
                "levels": {"blue": {"signal": {"metric": "a", "agg": "sum"}, "value": 1}},
            },
            "window",
        ),
        (
            {
                "id": "x",
                "hazard": "h",
                "levels": {
                    "blue": {"signal": {"metric": "a", "agg": "sum", "window": "9d"}, "value": 1}
                },
            },
            "between",
        ),
        (
            {
                "id": "x",
                "hazard": "h",
                "levels": {"blue": {"signal": {"metric": "a", "kind": "forecast"}, "value": 1}},
            },
            "forecast",
        ),
        ({"id": "x", "hazard": "h", "raise_by": 1}, "condition"),
        (
            {"id": "x", "hazard": "h", "signal": {"metric": "a"}, "levels": {"blue": "high"}},
            "object",
        ),
    ],
)
def test_invalid_rules_are_refused_with_the_field_named(raw, message):
    with pytest.raises(RuleConfigError, match=message):
        parse_rule(raw)
