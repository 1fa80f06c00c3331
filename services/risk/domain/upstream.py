"""Warnings issued upstream, as compound rules see them.

A warning names regions by 12-digit code; a code with trailing zeros names a larger region (a
county ``110101000000`` covers every township in it). A compound rule asks for a warning covering
the station's township (or county, or village): covered when the scope's prefix lies inside one of
the warning's regions.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.contracts import Level

# what upstream senders call the hazards, in CAP ``event`` and in Chinese signal names
_EVENT_ALIASES = {
    "暴雨": "rainstorm",
    "rainstorm": "rainstorm",
    "heavy rain": "rainstorm",
    "大风": "gale",
    "gale": "gale",
    "wind": "gale",
    "高温": "heat",
    "heat": "heat",
    "森林火险": "forest_fire",
    "forest fire": "forest_fire",
    "地质灾害": "geohazard",
    "地质灾害气象风险": "geohazard",
    "洪水": "flood",
    "flood": "flood",
    "台风": "typhoon",
    "typhoon": "typhoon",
    "暴雪": "snowstorm",
    "snowstorm": "snowstorm",
    "寒潮": "cold_wave",
    "cold wave": "cold_wave",
    "霜冻": "frost",
    "frost": "frost",
    "大雾": "fog",
    "fog": "fog",
    "霾": "haze",
    "haze": "haze",
    "道路结冰": "road_icing",
    "road icing": "road_icing",
    "雷电": "lightning",
    "lightning": "lightning",
    "冰雹": "hail",
    "hail": "hail",
    "沙尘暴": "dust_storm",
    "dust storm": "dust_storm",
    "干旱": "drought",
    "drought": "drought",
    "山洪": "mountain_torrent",
    "mountain torrent": "mountain_torrent",
    "内涝": "waterlogging",
    "waterlogging": "waterlogging",
}


def hazard_of_event(event: str) -> str:
    """The hazard name for an upstream CAP ``event`` ("暴雨红色预警" → rainstorm)."""
    text = event.strip().lower()
    for alias, hazard in _EVENT_ALIASES.items():
        if alias in text:
            return hazard
    return text.replace(" ", "_") or "unknown"


def warning_prefix(code: str) -> str:
    """The significant prefix of a region code: ``110101000000`` → ``110101``."""
    for n in (2, 4, 6, 9):
        if code[n:].strip("0") == "":
            return code[:n]
    return code


class UpstreamView:
    """The upstream warnings in force, answering ``upstream_level(hazard, prefix)``."""

    def __init__(self, warnings: Iterable[tuple[str, Level, list[str]]]) -> None:
        self._by_hazard: dict[str, list[tuple[Level, list[str]]]] = {}
        for hazard, level, codes in warnings:
            prefixes = [warning_prefix(c) for c in codes]
            self._by_hazard.setdefault(hazard, []).append((level, prefixes))

    def upstream_level(self, hazard: str, region_prefix: str) -> Level:
        best = Level.none
        for level, prefixes in self._by_hazard.get(hazard, ()):
            if level > best and any(region_prefix.startswith(p) for p in prefixes):
                best = level
        return best
