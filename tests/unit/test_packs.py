"""The shipped packs against the official numbers (DOMAIN.md), written out here independently of the
pack files: exactly at, just under and just over each value, and the restore paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.risk.domain.engine import ReadingIn, StationPlan, StationState, evaluate
from services.risk.domain.packs import (
    Placeholder,
    apply_overrides,
    resolve_rule,
    rules_for_station,
    shipped_packs,
)
from services.risk.domain.rules import RuleConfigError, parse_rule
from shared.contracts import Level

T0 = datetime(2026, 7, 1, 4, tzinfo=UTC)  # 12:00 Beijing time
H = 3600
EPS = 0.01
N, B, Y, O, R = Level.none, Level.blue, Level.yellow, Level.orange, Level.red  # noqa: E741


def station_rules(kind, attributes=None):
    got = rules_for_station(shipped_packs().values(), kind, attributes or {})
    assert got.problems == ()
    return got.rules


def levels_after(kind, metric, points, attributes=None, rule_id=None):
    """Feed (offset seconds, value) points; return the final level of each rule (or of one)."""
    rules = [r for r in station_rules(kind, attributes) if not r.expected]
    plan = StationPlan.build(rules)
    st = StationState("S1", "110101001001")
    trail = []
    for off, v in points:
        st, _ = evaluate(
            plan, st, ReadingIn("S1", st.region_code, metric, T0 + timedelta(seconds=off), v), T0
        )
        trail.append(max((rs.level for rs in st.rules.values()), default=N))
    if rule_id is not None:
        return st.rules[rule_id].level
    return trail


def final(kind, metric, points, attributes=None):
    return levels_after(kind, metric, points, attributes)[-1]


# -- rainstorm: 12 h / 6 h / 3 h ≥ 50 mm, 3 h ≥ 100 mm -----------------------------------------

RAIN = [
    # one burst at t0, judged when a zero comes in later: only the windows still holding it count
    ([(0, 50.0), (6 * H, 0.0)], B),
    ([(0, 50.0 - EPS), (6 * H, 0.0)], N),
    ([(0, 50.0 + EPS), (6 * H, 0.0)], B),
    ([(0, 50.0), (12 * H, 0.0)], N),  # the 12 h window is half-open: the burst has left it
    ([(0, 50.0), (3 * H, 0.0)], Y),
    ([(0, 50.0 - EPS), (3 * H, 0.0)], N),
    ([(0, 50.0)], O),
    ([(0, 50.0 - EPS)], N),
    ([(0, 100.0 - EPS)], O),
    ([(0, 100.0)], R),
    ([(0, 100.0 + EPS)], R),
    ([(i * 300, 3.0) for i in range(34)], O),  # 102 mm spread over 2 h 45 min … ≥ 100 → red?
]
RAIN[-1] = ([(i * 300, 3.0) for i in range(34)], R)


@pytest.mark.parametrize(("points", "expected"), RAIN)
def test_rainstorm(points, expected):
    assert final("rain_gauge", "rainfall", points) == expected


def test_rainstorm_falls_back_as_the_windows_drain():
    trail = levels_after(
        "rain_gauge", "rainfall", [(0, 100.0), (3 * H, 0), (6 * H, 0), (12 * H, 0)]
    )
    assert trail == [R, Y, B, N]


# -- gale: Beaufort 6/7, 8/9, 10/11, 12/13 as m/s lower bounds ---------------------------------

GALE = [
    ("wind_speed", 10.8, B),
    ("wind_speed", 10.8 - EPS, N),
    ("wind_speed", 17.2, Y),
    ("wind_speed", 17.2 - EPS, B),
    ("wind_speed", 24.5, O),
    ("wind_speed", 32.7, R),
    ("wind_speed", 32.7 - EPS, O),
    ("wind_gust", 13.9, B),
    ("wind_gust", 13.9 - EPS, N),
    ("wind_gust", 20.8, Y),
    ("wind_gust", 28.5, O),
    ("wind_gust", 28.5 - EPS, Y),
    ("wind_gust", 37.0, R),
]


@pytest.mark.parametrize(("metric", "value", "expected"), GALE)
def test_gale(metric, value, expected):
    assert final("weather_station", metric, [(0, value)]) == expected


def test_gale_windows_24h_12h_6h():
    # force 10 mean wind 7 h ago is outside the 6 h orange window, inside the 12 h yellow one
    assert final("weather_station", "wind_speed", [(0, 25.0), (7 * H, 0.0)]) == Y
    assert final("weather_station", "wind_speed", [(0, 25.0), (13 * H, 0.0)]) == B
    assert final("weather_station", "wind_speed", [(0, 25.0), (24 * H, 0.0)]) == N


# -- heat: yellow 35 °C three days running, orange 37, red 40 within 24 h ----------------------


def days(*maxima):
    pts = []
    for d, m in enumerate(maxima):
        pts += [(d * 24 * H - 6 * H, 25.0), (d * 24 * H, m)]  # morning, afternoon peak
    return pts


@pytest.mark.parametrize(
    ("maxima", "expected"),
    [
        ((35.0, 35.0, 35.0), Y),
        ((35.0, 35.0 - EPS, 35.0), N),
        ((36.0, 36.0), N),  # two days only
        ((37.0,), O),
        ((37.0 - EPS,), N),
        ((40.0,), R),
        ((40.0 - EPS,), O),
        ((35.0, 35.0, 40.0), R),
    ],
)
def test_heat(maxima, expected):
    assert final("weather_station", "temperature", days(*maxima)) == expected


# -- forest fire: grades 3/4/5 -----------------------------------------------------------------


@pytest.mark.parametrize(("grade", "expected"), [(2, N), (3, Y), (4, O), (5, R)])
def test_forest_fire(grade, expected):
    assert final("fire_danger", "fire_danger", [(0, float(grade))]) == expected


# -- hydrology: per-station warning / approach / guaranteed / historic max ---------------------

HYDRO = {
    "warning_level": 3.0,
    "approach_level": 3.6,
    "guaranteed_level": 4.2,
    "historic_max": 5.1,
    "restore_margin": 0.1,
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3.0 - EPS, N),
        (3.0, B),
        (3.6 - EPS, B),
        (3.6, Y),
        (4.2, O),
        (4.2 + EPS, O),
        (5.1 - EPS, O),
        (5.1, R),
    ],
)
def test_hydrology(value, expected):
    assert final("water_level", "water_level", [(0, value)], HYDRO) == expected


def test_hydrology_restores_below_the_margin_only():
    trail = levels_after(
        "water_level", "water_level", [(0, 3.2), (300, 2.95), (600, 2.9), (900, 2.9 - EPS)], HYDRO
    )
    assert trail == [B, B, B, N]


def test_hydrology_without_an_attribute_leaves_that_level_out():
    rules = station_rules("water_level", {"warning_level": 3.0})
    (rule,) = rules
    assert [s.level for s in rule.levels] == [B]


# -- hazardous chemicals: GB/T 50493 25 / 50 %LEL, 100 % / 200 % OEL ---------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(25.0 - EPS, N), (25.0, O), (50.0 - EPS, O), (50.0, R), (50.0 + EPS, R)],
)
def test_combustible_gas(value, expected):
    assert final("combustible_gas", "combustible_gas", [(0, value)]) == expected


@pytest.mark.parametrize(("value", "expected"), [(9.99, N), (10.0, O), (19.99, O), (20.0, R)])
def test_toxic_gas_in_multiples_of_the_oel(value, expected):
    assert final("toxic_gas", "toxic_gas", [(0, value)], {"oel_ppm": 10.0}) == expected


def test_tank_low_low_reads_downwards():
    attrs = {"low": 1.0, "low_low": 0.5}
    assert final("tank_level", "tank_level", [(0, 0.5)], attrs) == R
    assert final("tank_level", "tank_level", [(0, 1.01)], attrs) == N


# -- coal-mine methane by position: alarm, power cut, restore (% CH4); CO 24 ppm -------------

METHANE = [  # position, alarm, cut, restore (煤矿安全规程 table; DOMAIN.md)
    ("T1", 1.0, 1.5, 1.0),
    ("T2", 1.0, 1.0, 1.0),
    ("T3", 0.5, 0.5, 0.5),
    ("heading_T1", 1.0, 1.5, 1.0),
    ("heading_T2", 1.0, 1.0, 1.0),
    ("drainage", 2.5, 2.5, 2.5),
]


@pytest.mark.parametrize(("position", "alarm", "cut", "restore"), METHANE)
def test_methane_boundaries(position, alarm, cut, restore):
    attrs = {"position": position}
    at_alarm = R if alarm == cut else O
    assert final("coal_mine_methane", "ch4", [(0, alarm - EPS)], attrs) == N
    assert final("coal_mine_methane", "ch4", [(0, alarm)], attrs) == at_alarm
    assert final("coal_mine_methane", "ch4", [(0, cut)], attrs) == R
    assert final("coal_mine_methane", "ch4", [(0, cut + EPS)], attrs) == R


@pytest.mark.parametrize(("position", "alarm", "cut", "restore"), METHANE)
def test_methane_power_returns_only_below_the_restore_value(position, alarm, cut, restore):
    trail = levels_after(
        "coal_mine_methane",
        "ch4",
        [(0, cut + 0.2), (60, restore), (120, restore - EPS)],
        {"position": position},
    )
    assert trail == [R, R, N]


@pytest.mark.parametrize(("value", "expected"), [(23.9, N), (24.0, O), (30.0, O)])
def test_coal_mine_co(value, expected):
    assert final("co", "co", [(0, value)]) == expected


# -- overrides ---------------------------------------------------------------------------------


def test_a_looser_override_is_refused_citing_the_clause():
    got = rules_for_station(
        shipped_packs().values(),
        "combustible_gas",
        {"overrides": {"chem.combustible_gas": {"orange": 30}}},
    )
    assert got.rules == ()  # the rule is left out, and said why
    (problem,) = got.problems
    assert "looser than 25" in problem
    assert "§5.5.3" in problem


def test_a_stricter_override_applies_and_keeps_the_official_value_in_its_source():
    got = rules_for_station(
        shipped_packs().values(),
        "coal_mine_methane",
        {"position": "T1", "overrides": {"coal.ch4_T1": {"orange": 0.8, "red": 1.2}}},
    )
    assert got.problems == ()
    assert (
        final(
            "coal_mine_methane",
            "ch4",
            [(0, 0.8)],
            {"position": "T1", "overrides": {"coal.ch4_T1": {"orange": 0.8}}},
        )
        == O
    )
    rule = next(r for r in got.rules if r.rule_id == "coal.ch4_T1")
    crit = next(c for lvl, c in rule.criteria() if lvl == R)
    assert crit.value == 1.2
    assert crit.source is not None
    assert "official 1.5" in crit.source.cite()


def test_region_overrides_apply_broadest_first_and_a_station_may_tighten_further():
    got = rules_for_station(
        shipped_packs().values(),
        "combustible_gas",
        {"overrides": {"chem.combustible_gas": {"orange": 15}}},
        region_overrides=[("110101", {"chem.combustible_gas": {"orange": 20, "blue": 10}})],
    )
    assert got.problems == ()
    (rule,) = got.rules
    assert {lvl.name: c.value for lvl, c in rule.criteria()} == {
        "blue": 10.0,
        "orange": 15.0,
        "red": 50.0,
    }


def test_a_station_cannot_loosen_what_its_region_tightened_beyond_the_official_value():
    pack = shipped_packs()["hazardous_chemicals"]
    raw = dict(pack.rule("chem.combustible_gas") or {})
    raw.pop("applies_to")
    official = parse_rule(raw)
    # the check is against the official value: 26 is looser than 25 whatever the region says
    with pytest.raises(RuleConfigError, match="looser"):
        apply_overrides(raw, official, {"orange": 26}, who="station")


def test_every_criterion_of_every_pack_carries_its_source():
    for pack in shipped_packs().values():
        assert pack.mapping
        for raw in pack.rules:
            for _lvl, crit in _all_criteria(pack, raw):
                assert crit.source is not None, (pack.id, raw["id"])
                assert crit.source.document, (pack.id, raw["id"])
                assert crit.source.value, (pack.id, raw["id"])


def _all_criteria(pack, raw):
    return parse_rule(resolve_rule(raw, pack, Placeholder())).criteria()
