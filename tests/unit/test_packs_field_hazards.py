"""The packs for the hazards the field protocols feed, against their numbers written out here
independently of the pack files: mountain torrents (a village's critical rainfall and warning
levels from the county's survey), urban waterlogging (the national 15 cm and a plan's depths),
and the CMA signals added (snowstorm, cold wave, frost, fog, road icing, drought); upstream
warnings of these hazards are known by their names."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.risk.domain.engine import ReadingIn, StationPlan, StationState, evaluate
from services.risk.domain.upstream import hazard_of_event
from shared.contracts import Level
from tests.unit.test_packs import EPS, T0, B, H, N, O, R, Y, final, station_rules

VILLAGE = {
    "survey": "五通桥区山洪灾害调查评价成果",
    "critical_rainfall": {"prepare": {"1h": 30, "3h": 50}, "evacuate": {"1h": 40, "3h": 70}},
}


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([(0, 30.0)], O),
        ([(0, 30.0 - EPS)], N),
        ([(0, 40.0)], R),
        ([(0, 40.0 - EPS)], O),
        # 18 mm an hour: no hour reaches 30, three hours reach 54 ≥ 50 (准备转移)
        ([(0, 18.0), (H, 18.0), (2 * H, 18.0)], O),
        # 24 mm an hour: three hours reach 72 ≥ 70 (立即转移)
        ([(0, 24.0), (H, 24.0), (2 * H, 24.0)], R),
        # the 3 h window drains: judged 3 h after the first burst, only two remain
        ([(0, 18.0), (H, 18.0), (2 * H, 18.0), (3 * H, 0.0)], N),
    ],
)
def test_mountain_torrent_critical_rainfall(points, expected):
    feed = [(off, "rainfall", v) for off, v in points]
    assert _levels("rain_gauge", feed, VILLAGE).get("mountain_torrent", N) == expected


def test_a_period_the_survey_gives_no_value_for_is_not_judged_and_each_level_cites_it():
    rules = {r.rule_id: r for r in station_rules("rain_gauge", VILLAGE)}
    assert "torrent.rain_1h" in rules
    assert "torrent.rain_3h" in rules
    assert "torrent.rain_6h" not in rules
    red = next(spec for spec in rules["torrent.rain_1h"].levels if spec.level == Level.red)
    crit = red.when.items[0]
    assert crit.value == 40.0
    assert "立即转移" in crit.source.clause
    assert "山洪灾害分析评价技术要求" in crit.source.document
    # a gauge without survey values has no torrent rule at all
    assert not any(r.hazard == "mountain_torrent" for r in station_rules("rain_gauge"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.8, N), (1.2 - EPS, N), (1.2, O), (1.6, R)],
)
def test_mountain_torrent_water_level(value, expected):
    attrs = {"critical_level": {"prepare": 1.2, "evacuate": 1.6}}
    assert final("water_level", "water_level", [(0, value)], attrs) == expected


@pytest.mark.parametrize(("depth", "expected"), [(15.0 - EPS, N), (15.0, Y), (40.0, Y), (0.0, N)])
def test_waterlogging_the_national_lane_depth(depth, expected):
    assert final("waterlogging", "waterlogging_depth", [(0, depth)]) == expected


@pytest.mark.parametrize(
    ("depth", "expected"), [(4.9, N), (5.0, B), (10.0, Y), (30.0, O), (50.0, R)]
)
def test_waterlogging_a_plans_depths(depth, expected):
    attrs = {"waterlogging_levels": {"blue": 5, "yellow": 10, "orange": 30, "red": 50}}
    assert final("waterlogging", "waterlogging_depth", [(0, depth)], attrs) == expected


def test_waterlogging_restores_below_13_cm():
    got = [
        final("waterlogging", "waterlogging_depth", pts)
        for pts in ([(0, 16.0), (60, 13.5)], [(0, 16.0), (60, 12.9)])
    ]
    assert got == [Y, N]


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([(0, 15.0)], R),
        ([(0, 15.0 - EPS)], O),
        ([(0, 10.0)], O),
        ([(0, 10.0 - EPS)], Y),
        ([(0, 6.0), (7 * H, 0.0)], Y),  # only the 12 h window still holds it
        ([(0, 6.0 - EPS), (7 * H, 0.0)], B),
        ([(0, 4.0), (7 * H, 0.0)], B),
        ([(0, 4.0 - EPS), (7 * H, 0.0)], N),
    ],
)
def test_snowstorm(points, expected):
    assert final("weather_station", "snowfall", points) == expected


@pytest.mark.parametrize(
    ("minimum", "expected"), [(0.5, N), (0.0, B), (-3.0 + EPS, B), (-3.0, Y), (-5.0, O)]
)
def test_frost(minimum, expected):
    assert final("weather_station", "ground_temperature", [(0, minimum)]) == expected


@pytest.mark.parametrize(
    ("visibility", "expected"), [(501.0, N), (500.0, Y), (200.0, O), (50.0, R)]
)
def test_fog_where_low_visibility_is_fog(visibility, expected):
    attrs = {"visibility_fog": True}
    assert final("weather_station", "visibility", [(0, visibility)], attrs) == expected
    # a station whose low visibility may be haze or dust: upstream warnings only
    assert final("weather_station", "visibility", [(0, visibility)]) == N


@pytest.mark.parametrize(("mci", "expected"), [(-1.5 + EPS, N), (-1.5, O), (-2.0, R)])
def test_drought(mci, expected):
    assert final("weather_station", "drought_index", [(0, mci)]) == expected


def _levels(kind, feed, attributes=None):
    """Feed (offset s, metric, value) readings of several metrics; the final level per hazard."""
    rules = [r for r in station_rules(kind, attributes) if not r.expected]
    plan = StationPlan.build(rules)
    st = StationState("S1", "110101001001")
    for off, metric, v in feed:
        st, _ = evaluate(
            plan, st, ReadingIn("S1", st.region_code, metric, T0 + timedelta(seconds=off), v), T0
        )
    by_rule = {r.rule_id: r.hazard for r in rules}
    out: dict[str, Level] = {}
    for rid, rs in st.rules.items():
        h = by_rule[rid]
        out[h] = max(out.get(h, N), rs.level)
    return out


def test_road_icing_needs_a_frozen_surface_and_precipitation():
    frozen_dry = [(0, "road_surface_temperature", -1.0), (60, "rainfall", 0.0)]
    frozen_wet = [(0, "road_surface_temperature", -1.0), (60, "rainfall", 0.2)]
    thawed_wet = [(0, "road_surface_temperature", 0.5), (60, "rainfall", 0.2)]
    got = [_levels("road_weather", f).get("road_icing", N) for f in (frozen_dry, frozen_wet)]
    assert got == [N, Y]
    assert _levels("road_weather", thawed_wet).get("road_icing", N) == N


def test_cold_wave_needs_the_fall_the_minimum_and_the_wind():
    def cold(fall: float, low: float, wind: float) -> Level:
        feed = [
            (0, "temperature", low + fall),
            (0, "wind_speed", wind),
            (23 * H, "temperature", low),
        ]
        return _levels("weather_station", feed).get("cold_wave", N)

    assert cold(16.0, -1.0, 11.0) == R
    assert cold(12.0, -1.0, 11.0) == O
    assert cold(10.0, 3.0, 11.0) == Y
    assert cold(12.0, 5.0, 11.0) == N  # a fall, but the minimum stays above 4 ℃
    assert cold(16.0, -1.0, 10.0) == B  # force 5: blue's wind, not yellow's (force 6)
    assert cold(16.0, -1.0, 7.9) == N


@pytest.mark.parametrize(
    ("event", "hazard"),
    [
        ("暴雪橙色预警", "snowstorm"),
        ("寒潮蓝色预警信号", "cold_wave"),
        ("道路结冰红色预警", "road_icing"),
        ("雷电黄色预警", "lightning"),
        ("冰雹橙色预警", "hail"),
        ("沙尘暴黄色预警", "dust_storm"),
        ("霾黄色预警", "haze"),
        ("大雾红色预警", "fog"),
        ("霜冻蓝色预警", "frost"),
        ("干旱橙色预警", "drought"),
        ("山洪灾害气象预警", "mountain_torrent"),
        ("城市内涝预警", "waterlogging"),
    ],
)
def test_upstream_warnings_of_these_hazards_are_known_by_name(event, hazard):
    assert hazard_of_event(event) == hazard
